"""The app as the tests run it: settings for the test servers, and the app in-process.

The fixtures that use these are in conftest.py; tests/stack.py runs apps on sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text

from app.core.database import Base
from app.core.settings import Settings
from app.core.state import state_of
from app.main import DEFAULT_DOMAINS, create_app
from devservers import CacheServer, PostgresServer


def server_env(
    pg: PostgresServer, cache: CacheServer, database: str | None = None
) -> dict[str, str]:
    return {**pg.env(database), **cache.env()}


def make_settings(
    pg: PostgresServer, cache: CacheServer, database: str | None = None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        name.removeprefix("APP_").lower(): value
        for name, value in server_env(pg, cache, database).items()
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient

    async def sql(self, statement: str, **params: Any) -> list[Any]:
        """Run SQL behind the app's back (to check or change the truth directly)."""
        async with state_of(self.app).engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []

    async def reset(self) -> None:
        """Empty the app's tables (those that exist) and its cache database."""
        present = {row[0] for row in await self.sql("SELECT tablename FROM pg_tables")}
        tables = [table.name for table in Base.metadata.sorted_tables if table.name in present]
        if tables:
            await self.sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        client = state_of(self.app).cache.client
        if client is not None:
            # Straight to the server, not through the breaker; a wrong password just fails.
            with contextlib.suppress(RedisError, OSError):
                await client.flushdb()

    async def count(self, table: str) -> int:
        rows = await self.sql(f"SELECT count(*) FROM {table}")
        return int(rows[0][0])


@asynccontextmanager
async def running_app(
    settings: Settings, domains: Sequence[str] = DEFAULT_DOMAINS, reset: bool = True
) -> AsyncIterator[Api]:
    """The app with its lifespan running, and an HTTP client talking to it in-process.

    Unless ``reset`` is false, it starts on empty tables and an empty cache database.
    """
    app = create_app(settings, domains)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            api = Api(app, client)
            if reset:
                await api.reset()
            yield api


@asynccontextmanager
async def cache_client(cache: CacheServer, db: int = 0) -> AsyncIterator[Redis]:
    """A plain client to look into the cache server."""
    client = Redis(host=cache.host, port=cache.port, password=cache.password, db=db)
    try:
        yield client
    finally:
        await client.aclose()


# What the ``domain_app`` fixture gives (conftest.py): ``domain_app("users", **settings)``.
DomainApp = Callable[..., AbstractAsyncContextManager[Api]]


async def until(
    condition: Callable[[], bool | Awaitable[bool]], seconds: float = 20, what: str = "it"
) -> None:
    """Poll ``condition`` (plain or async) until it holds; fail after ``seconds``.

    What a test waits for is counted or observed, not slept for: a slow machine then waits
    longer instead of failing the figures that follow.
    """
    deadline = time.monotonic() + seconds
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        await asyncio.sleep(0.02)
