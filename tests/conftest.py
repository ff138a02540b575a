"""Fixtures: one real PostgreSQL and one real Valkey/Redis for the session, apps per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from app.core.settings import Settings
from app.main import ALL_DOMAINS, load_domains
from devservers import CacheServer, PostgresServer
from tests.apps import Api, DomainApp, cache_client, make_settings, running_app
from tests.stack import Stack, seed_001_settings, single_app

# Every domain's tables on Base.metadata, as app/migrations/env.py has them, whichever
# tests ran before: resets and schema comparisons then see them all.
load_domains(ALL_DOMAINS)


@pytest.fixture(scope="session", autouse=True)
def _telemetry_env() -> Iterator[None]:
    """Trace everything (the instrumentation is under test) but export nowhere by default."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_TRACES_EXPORTER", "none")
        patch.delenv("OTEL_SDK_DISABLED", raising=False)
        patch.delenv("OTEL_SERVICE_NAME", raising=False)
        yield


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cache_server() -> Iterator[CacheServer]:
    server = CacheServer().start()
    try:
        yield server
    finally:
        server.stop(remove=True)


@pytest.fixture
def settings(pg: PostgresServer, cache_server: CacheServer) -> Settings:
    return make_settings(pg, cache_server)


@pytest.fixture
async def raw_cache(cache_server: CacheServer) -> AsyncIterator[Redis]:
    async with cache_client(cache_server) as client:
        yield client


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    """The full app on a clean database and an empty cache."""
    async with running_app(settings) as running:
        yield running


@pytest.fixture
async def stack(pg: PostgresServer, cache_server: CacheServer) -> AsyncIterator[Stack]:
    """Every domain in one app on a socket, calling itself there: the single app."""
    async with single_app(pg, cache_server) as running:
        yield running


@pytest.fixture
def domain_app(pg: PostgresServer, cache_server: CacheServer) -> DomainApp:
    """The factory of a seed-001 domain served alone, in-process, on clean tables:
    ``async with domain_app("users", login_max_failures=2) as users: ...``; the keyword
    arguments are settings (``settings=`` gives them whole)."""

    @asynccontextmanager
    async def start(
        domain: str, settings: Settings | None = None, **overrides: Any
    ) -> AsyncIterator[Api]:
        if settings is None:
            settings = seed_001_settings(pg, cache_server, **overrides)
        async with running_app(settings, domains=[domain]) as running:
            yield running

    return start
