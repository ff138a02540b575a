"""Orders: lines totalled by the server, charged once over HTTP, finished if interrupted."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from fastapi import FastAPI
from sqlalchemy import Table

from app.core.auth import RemoteUserCheck
from app.core.domain import Domain
from app.core.idempotency import IdempotencyRecord
from app.core.services import ServiceClient
from app.core.settings import Settings
from app.orders.models import Order, OrderItem
from app.orders.router import build_router
from app.orders.service import sweeper


@asynccontextmanager
async def lifespan(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Per worker: the clients of the users and payments services, and the sweep."""
    assert settings.users_url is not None and settings.payments_url is not None
    clients = {
        "users_service": settings.users_url,
        "payments_service": settings.payments_url,
    }
    for name, url in clients.items():
        client = ServiceClient(
            url,
            settings.service_connect_timeout,
            settings.service_timeout,
            app.state.tracer_provider,
        )
        setattr(app.state, name, client)
    own_check = not hasattr(app.state, "user_check")  # the users domain's check wins
    if own_check:
        app.state.user_check = RemoteUserCheck(app.state.users_service, settings.auth_cache_ttl)
    try:
        async with sweeper(app, settings):
            yield
    finally:
        if own_check and hasattr(app.state, "user_check"):
            del app.state.user_check
        for name in clients:
            await getattr(app.state, name).aclose()


domain = Domain(
    name="orders",
    router=build_router("/orders"),
    tables=(
        cast(Table, Order.__table__),
        cast(Table, OrderItem.__table__),
        cast(Table, IdempotencyRecord.__table__),
    ),
    prefix="/orders",
    service_router=build_router(""),
    lifespan=lifespan,
)
