"""The application factory, and ``app``, the ASGI application Gunicorn serves.

``create_app()`` serves every domain; ``create_app(domains=["items"])`` serves a subset,
so one codebase can run as one app or as several (Gunicorn accepts the call form:
``gunicorn 'app.main:create_app(domains=["items"])'``).

Nothing here connects to anything at import time: the settings are read, the engine and
the cache client are created, and the exporters start in the lifespan, that is inside
each Gunicorn worker after the fork.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import import_module

from fastapi import FastAPI

from app.core import telemetry
from app.core.cache import Cache
from app.core.database import create_engine, create_schema, create_sessionmaker
from app.core.domain import Domain
from app.core.errors import install_error_handlers
from app.core.settings import Settings, load_settings

logger = logging.getLogger("app")

ALL_DOMAINS: tuple[str, ...] = ("items", "notes")
VERSION = "1.0.0"


def load_domains(names: Sequence[str]) -> list[Domain]:
    unknown = sorted(set(names) - set(ALL_DOMAINS))
    if unknown:
        raise ValueError(f"unknown domains {unknown}; known: {list(ALL_DOMAINS)}")
    return [import_module(f"app.{name}").domain for name in names]


def create_app(settings: Settings | None = None, domains: Sequence[str] = ALL_DOMAINS) -> FastAPI:
    """Build the app; ``settings`` default to the environment, read at start-up."""
    selected = load_domains(domains)
    tables = [table for domain in selected for table in domain.tables]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings if settings is not None else load_settings()
        engine = create_engine(config)
        cache = Cache.from_settings(config)
        provider = app.state.tracer_provider
        try:
            telemetry.start(provider, engine, cache.client)
            if config.db_create_schema:
                await create_schema(engine, tables)
            app.state.settings = config
            app.state.engine = engine
            app.state.sessionmaker = create_sessionmaker(engine)
            app.state.cache = cache
            cache_state = "off"
            if cache.enabled:
                reachable = await cache.ping()
                cache_state = f"ttl={config.cache_ttl}s" + ("" if reachable else " (unreachable)")
            logger.info(
                "started: domains=%s db=%s:%s/%s cache=%s tracing=%s",
                ",".join(domain.name for domain in selected),
                config.db_host,
                config.db_port,
                config.db_name,
                cache_state,
                "on" if provider is not None else "off",
            )
            yield
        finally:
            await cache.close()
            await engine.dispose()
            telemetry.stop(provider)

    app = FastAPI(
        title="webstack",
        version=VERSION,
        description="Items and notes on PostgreSQL, cached in Valkey.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: the worker answers. Not traced."""
        return {"status": "ok"}

    for domain in selected:
        app.include_router(domain.router)
    app.state.tracer_provider = telemetry.instrument_app(app)
    return app


app = create_app()
