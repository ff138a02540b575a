"""Orders: lines totalled by the server, the user checked and the order charged over HTTP."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from fastapi import FastAPI
from sqlalchemy import Table

from app.core.domain import Domain
from app.core.services import ServiceClient
from app.core.settings import Settings
from app.orders.models import Order, OrderItem
from app.orders.router import build_router


@asynccontextmanager
async def lifespan(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """The clients of the users and payments services, per worker."""
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
    try:
        yield
    finally:
        for name in clients:
            await getattr(app.state, name).aclose()


domain = Domain(
    name="orders",
    router=build_router("/orders"),
    tables=(cast(Table, Order.__table__), cast(Table, OrderItem.__table__)),
    prefix="/orders",
    service_router=build_router(""),
    lifespan=lifespan,
)
