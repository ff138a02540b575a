"""Payments: one charge per order through a simulated processor; refunds."""

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
from app.payments.models import Payment
from app.payments.router import build_router


@asynccontextmanager
async def lifespan(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Per worker: the clients of the users service (tokens) and the orders service."""
    assert settings.users_url is not None and settings.orders_url is not None
    users, orders = (
        ServiceClient(
            url,
            settings.service_connect_timeout,
            settings.service_timeout,
            app.state.tracer_provider,
        )
        for url in (settings.users_url, settings.orders_url)
    )
    app.state.orders_service = orders
    own_check = not hasattr(app.state, "user_check")  # the users domain's check wins
    if own_check:
        app.state.user_check = RemoteUserCheck(users, settings.auth_cache_ttl)
    try:
        yield
    finally:
        if own_check and hasattr(app.state, "user_check"):
            del app.state.user_check
        await users.aclose()
        await orders.aclose()


domain = Domain(
    name="payments",
    router=build_router("/payments"),
    tables=(cast(Table, Payment.__table__), cast(Table, IdempotencyRecord.__table__)),
    prefix="/payments",
    service_router=build_router(""),
    lifespan=lifespan,
)
