"""The application factory, and ``app``, the ASGI application Gunicorn serves.

``create_app()`` serves the domains named by ``APP_DOMAINS`` (by default items and notes,
the seed-000 app); ``create_app(domains=["users"])`` serves the ones given, so one codebase
runs as one app or as several services (Gunicorn accepts the call form too:
``gunicorn 'app.main:create_app(domains=["items"])'``). Every domain's routes are at their
public paths (``/users/me``), in one app as in a service of its own. ``APP_ROOT_PATH``
(``/users``) is where a service published under a prefix has its own pages: docs,
OpenAPI schema, metrics and health under it (``/users/docs``); health also at ``/health``.

Nothing here connects to anything at import time: the settings are read, the engine and
the cache client are created, and the exporters start in the lifespan, that is inside
each Gunicorn worker after the fork.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import import_module

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from app.core import idempotency, metrics, openapi, telemetry
from app.core.auth import RemoteUserCheck, UserCheck
from app.core.body import RequestBodyGuard
from app.core.cache import Cache
from app.core.concurrency import ConcurrencyLimitMiddleware
from app.core.database import create_engine, create_schema, create_sessionmaker
from app.core.domain import Domain
from app.core.errors import install_error_handlers
from app.core.services import ServiceClient
from app.core.settings import (
    DEFAULT_DOMAINS,
    DOMAIN_NAMES,
    Settings,
    check_required,
    load_serving_settings,
    load_settings,
)
from app.core.state import AppState
from app.users.lockout import LoginLockout
from app.users.passwords import Passwords
from app.users.service import LocalUserCheck

logger = logging.getLogger("app")

# Every domain of the codebase; `app` serves DEFAULT_DOMAINS unless APP_DOMAINS says more.
ALL_DOMAINS: tuple[str, ...] = DOMAIN_NAMES
VERSION = "1.0.0"


def load_domains(names: Sequence[str]) -> list[Domain]:
    unknown = sorted(set(names) - set(ALL_DOMAINS))
    if unknown:
        raise ValueError(f"unknown domains {unknown}; known: {list(ALL_DOMAINS)}")
    return [import_module(f"app.{name}").domain for name in names]


@asynccontextmanager
async def open_state(
    config: Settings, domains: Sequence[str], provider: TracerProvider | None
) -> AsyncIterator[AppState]:
    """Every resource of a worker serving ``domains``, made here and closed here."""
    served = set(domains)
    engine = create_engine(config)
    cache = Cache.from_settings(config)
    clients: list[ServiceClient] = []

    def client(url: str | None) -> ServiceClient:
        assert url is not None  # required where it is used (DOMAIN_REQUIREMENTS)
        made = ServiceClient(url, config.service_connect_timeout, config.service_timeout, provider)
        clients.append(made)
        return made

    try:
        telemetry.start(provider, engine, cache.client)
        sessions = create_sessionmaker(engine)
        users_here = "users" in served
        # Where users is served, tokens are checked against its table, also for the other
        # domains of a single app; elsewhere orders and payments ask the users service.
        users = None
        if not users_here and served & {"orders", "payments"}:
            users = client(config.users_url)
        user_check: UserCheck | None = LocalUserCheck(sessions) if users_here else None
        if users is not None:
            user_check = RemoteUserCheck(users, config.auth_cache_ttl)
        yield AppState(
            settings=config,
            engine=engine,
            sessions=sessions,
            cache=cache,
            tracer_provider=provider,
            user_check=user_check,
            passwords=Passwords(config) if users_here else None,
            login_lockout=LoginLockout(cache, config) if users_here else None,
            users_service=users,
            payments_service=client(config.payments_url) if "orders" in served else None,
            orders_service=client(config.orders_url) if "payments" in served else None,
        )
    finally:
        for made in clients:
            await made.aclose()
        await cache.close()
        await engine.dispose()
        telemetry.stop(provider)


def create_app(settings: Settings | None = None, domains: Sequence[str] | None = None) -> FastAPI:
    """Build the app; ``settings`` default to the environment, read at start-up.

    What shapes the app (domains, root path, metrics) is read now, from ``settings`` or
    from the environment; everything else when each worker starts.
    """
    serving = settings if settings is not None else load_serving_settings()
    names = tuple(domains) if domains is not None else serving.domains
    selected = load_domains(names)
    # Once each: every domain lists the shared idempotency_keys table.
    tables = list(dict.fromkeys(table for domain in selected for table in domain.tables))
    root_path = serving.root_path

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings is None:
            config = load_settings(names)
        else:
            config = settings
            check_required(config, names)
        provider = app.state.tracer_provider
        async with open_state(config, names, provider) as state:
            if config.db_create_schema:
                await create_schema(state.engine, tables)
            cache_state = "off"
            if state.cache.enabled:
                reachable = await state.cache.ping()
                cache_state = f"ttl={config.cache_ttl}s" + ("" if reachable else " (unreachable)")
            app.state.resources = state
            async with AsyncExitStack() as domain_resources:
                await domain_resources.enter_async_context(idempotency.maintenance(state))
                for domain in selected:
                    if domain.lifespan is not None:
                        await domain_resources.enter_async_context(domain.lifespan(state))
                logger.info(
                    "started: domains=%s%s db=%s:%s/%s cache=%s tracing=%s",
                    ",".join(domain.name for domain in selected),
                    f" root_path={root_path}" if root_path else "",
                    config.db_host,
                    config.db_port,
                    config.db_name,
                    cache_state,
                    "on" if provider is not None else "off",
                )
                try:
                    yield
                finally:
                    app.state.resources = None

    default = names == DEFAULT_DOMAINS
    app = FastAPI(
        title="webstack" if default else f"webstack: {', '.join(names)}",
        version=VERSION,
        description="Items and notes on PostgreSQL, cached in Valkey."
        if default
        else f"The {', '.join(names)} domain{'s' if len(names) > 1 else ''} of the webstack.",
        lifespan=lifespan,
        docs_url=f"{root_path}/docs",
        redoc_url=f"{root_path}/redoc",
        openapi_url=f"{root_path}/openapi.json",
    )
    install_error_handlers(app)

    async def health() -> dict[str, str]:
        """Liveness: the worker answers, and which release it runs. Not traced."""
        return {"status": "ok", "release": serving.release}

    # At /health for whatever checks the socket (roles/app) or nginx's /health reaches,
    # and under the root path beside the service's other pages.
    health_paths = dict.fromkeys(("/health", f"{root_path}/health"))
    for path in health_paths:
        documented = path == f"{root_path}/health"
        app.add_api_route(
            path, health, methods=["GET"], tags=["health"], include_in_schema=documented
        )
    metrics_path = f"{root_path}{metrics.METRICS_PATH}"
    # Innermost of ours: the metrics and spans around it include the time spent in line.
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        limit=serving.max_concurrent_requests,
        exempt=frozenset({*health_paths, metrics_path}),
    )
    # Outside the limit: a body is read and checked before its request takes a slot, so
    # a slow or hostile upload holds none; the route then gets it, or its refusal, at once.
    app.add_middleware(
        RequestBodyGuard, max_bytes=serving.max_body_bytes, max_depth=serving.max_json_depth
    )
    if serving.metrics_enabled:
        # Before the domains' routes: a service's /{user_id} would otherwise take /metrics.
        metrics.install(app, metrics_path)
    for domain in selected:
        app.include_router(domain.router)
    openapi.install(app, domains=names, max_body_bytes=serving.max_body_bytes)
    app.state.tracer_provider = telemetry.instrument_app(app)
    return app


app = create_app()
