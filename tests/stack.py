"""Apps of the seed-001 domains served over real HTTP on Unix sockets, in the test's loop.

The orders service calls the users and payments services over HTTP; here they are real
uvicorn servers on sockets in a temporary directory (the app or apps run their lifespan
in them), and the test talks to them through the same sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from app.core.auth import issue_token
from app.core.settings import Settings
from app.main import create_app
from devservers import CacheServer, PostgresServer
from tests.apps import Api, make_settings

# 64 bytes: long enough for HS512 too (a test signs with it to prove it is refused).
JWT_SECRET = "test-secret-" + "0123456789abcdef" * 3 + "tail"
PASSWORD = "Correct horse 1"
SEED_001 = ("users", "orders", "payments")
# The cheapest Argon2 costs the settings accept: tests hash many passwords.
FAST_HASHES = {"password_hash_time_cost": 2, "password_hash_memory_kib": 19456}


def seed_001_settings(
    pg: PostgresServer, cache: CacheServer, database: str | None = None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {"jwt_secret": JWT_SECRET, **FAST_HASHES}
    values.update(overrides)
    return make_settings(pg, cache, database, **values)


def token_for(user_id: int, settings: Settings) -> dict[str, str]:
    """An Authorization header for ``user_id``, minted with the shared secret."""
    token, _ = issue_token(user_id, settings)
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def socket_dir() -> Iterator[Path]:
    # Short: a Unix socket path must stay under about 100 bytes.
    path = Path(tempfile.mkdtemp(prefix="stack-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # pytest keeps its own signal handlers


@asynccontextmanager
async def serve(app: Any, socket: Path, lifespan: str = "on") -> AsyncIterator[None]:
    """``app`` with its lifespan, answering HTTP on ``socket`` until the block ends."""
    config = uvicorn.Config(app, uds=str(socket), lifespan=lifespan, log_level="warning")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise its error
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task


def socket_client(socket: Path) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.internal", timeout=30)


async def reset(app: FastAPI, client: httpx.AsyncClient) -> Api:
    """Empty the tables and the cache of an app that runs (its lifespan has started)."""
    api = Api(app, client)
    await api.reset()
    return api


async def register(
    client: httpx.AsyncClient, name: str, password: str = PASSWORD
) -> dict[str, str]:
    """A new user ``name`` logged in: the Authorization header of their token."""
    created = await client.post(
        "/users/register",
        json={"email": f"{name}@example.com", "username": name, "password": password},
    )
    assert created.status_code == 201, created.text
    login = await client.post("/users/login", json={"username": name, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@dataclass
class Stack:
    api: Api
    settings: Settings
    directory: Path

    @property
    def client(self) -> httpx.AsyncClient:
        return self.api.client


@asynccontextmanager
async def single_app(
    pg: PostgresServer, cache: CacheServer, keep: bool = False, **overrides: Any
) -> AsyncIterator[Stack]:
    """All seed-001 domains in one app that reaches users, orders and payments through its
    own socket, as the single-process deployment does (every charge succeeds unless
    ``payment_success_rate`` says otherwise). On empty tables unless ``keep``."""
    with socket_dir() as directory:
        own = f"unix:{directory / 'app.sock'}"
        values: dict[str, Any] = {
            "users_url": own,
            "payments_url": own,
            "orders_url": own,
            "payment_success_rate": 1.0,
            **overrides,
        }
        settings = seed_001_settings(pg, cache, **values)
        app = create_app(settings, SEED_001)
        async with serve(app, directory / "app.sock"), socket_client(directory / "app.sock") as c:
            api = Api(app, c) if keep else await reset(app, c)
            yield Stack(api, settings, directory)
