"""Per-account backoff after failed logins, kept in Valkey, failing open.

Every failed login of a name (the username or e-mail address as sent, lower-case: known
accounts and unknown names alike, so the answers never tell which exist) counts. After
``APP_LOGIN_MAX_FAILURES`` of them, each further failure locks the name for
``APP_LOGIN_LOCKOUT_BASE`` seconds, doubling per failure up to ``APP_LOGIN_LOCKOUT_MAX``;
while locked, a login of that name is answered 429 with ``Retry-After`` at once, without
looking at the password (so guessing stops, and costs no hash). The count is forgotten
``APP_LOGIN_FAILURE_WINDOW`` seconds after the last failure, and a successful login
clears it: a lock always ends, and nobody can lock an account for longer than the
maximum at a time. (Someone who keeps failing can keep an account locked, at the price of
one failure per lock; the per-address limits in nginx bound that.)

Keys: ``login:failures:{h}`` (a counter) and ``login:locked:{h}`` (present while locked,
its TTL the time left), ``h`` a SHA-256 of the name, so no address is stored in Valkey.
When Valkey is down or slow the check is skipped (the cache's breaker): logins go on,
slower only by Argon2, rather than nobody being able to log in.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Any

from fastapi import Depends
from redis.asyncio import Redis

from app.core.cache import Cache
from app.core.settings import Settings
from app.core.state import StateDep


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


class LoginLockout:
    def __init__(self, cache: Cache, settings: Settings) -> None:
        self.cache = cache
        self.free = settings.login_max_failures
        self.base = settings.login_lockout_base
        self.max = settings.login_lockout_max
        self.window = settings.login_failure_window

    @staticmethod
    def _keys(name: str) -> tuple[str, str]:
        digest = _digest(name)
        return f"login:failures:{digest}", f"login:locked:{digest}"

    async def retry_after(self, name: str) -> int | None:
        """Seconds until ``name`` may try again, or ``None`` if it may now."""
        _, locked = self._keys(name)
        ok, left = await self.cache.execute(lambda client: client.pttl(locked))
        if not ok or left is None or left <= 0:
            return None
        return max(1, math.ceil(left / 1000))

    async def failed(self, name: str) -> None:
        """Count a failure; lock the name once it is past the free failures."""
        failures, locked = self._keys(name)

        async def count(client: Redis) -> Any:
            pipe = client.pipeline(transaction=True)
            pipe.incr(failures)
            pipe.expire(failures, self.window)
            return await pipe.execute()

        ok, replies = await self.cache.execute(count)
        if not ok:
            return
        over = int(replies[0]) - self.free
        if over > 0:
            seconds = min(self.max, self.base * 2 ** min(over - 1, 32))
            await self.cache.execute(
                lambda client: client.set(locked, b"1", px=max(1, int(seconds * 1000)))
            )

    async def succeeded(self, name: str) -> None:
        failures, locked = self._keys(name)
        await self.cache.execute(lambda client: client.delete(failures, locked))


async def get_login_lockout(state: StateDep) -> LoginLockout:
    return state.need("login_lockout", state.login_lockout)


LoginLockoutDep = Annotated[LoginLockout, Depends(get_login_lockout)]
