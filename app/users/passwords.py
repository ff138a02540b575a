"""Argon2id password hashes (pwdlib), computed off the event loop.

A hash takes tens of milliseconds of CPU and ``APP_PASSWORD_HASH_MEMORY_KIB`` of memory,
so it runs in a worker thread (argon2 releases the GIL), at most
``APP_PASSWORD_HASH_CONCURRENCY`` at a time per worker: a burst of logins waits for a
slot instead of taking every thread and gigabytes of memory.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import anyio
from fastapi import Depends
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.core.settings import Settings
from app.core.state import StateDep


class Passwords:
    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.password_hash_time_cost,
                    memory_cost=settings.password_hash_memory_kib,
                ),
            )
        )
        self._limiter = anyio.CapacityLimiter(settings.password_hash_concurrency)
        self._unknown_user_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """Whether it matches, and a new hash when the stored one used other costs."""
        return await anyio.to_thread.run_sync(
            self._hasher.verify_and_update, password, password_hash, limiter=self._limiter
        )

    async def verify_unknown_user(self, password: str) -> None:
        """As long as a real check: a failed login does not tell whether the user exists."""
        if self._unknown_user_hash is None:
            self._unknown_user_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(password, self._unknown_user_hash)


async def get_passwords(state: StateDep) -> Passwords:
    return state.need("passwords", state.passwords)


PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
