"""Users: registration, login (bearer JWT), profiles."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from fastapi import FastAPI
from sqlalchemy import Table

from app.core.domain import Domain
from app.core.settings import Settings
from app.users.models import User
from app.users.passwords import Passwords
from app.users.router import build_router


@asynccontextmanager
async def lifespan(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    app.state.passwords = Passwords(settings)
    yield


domain = Domain(
    name="users",
    router=build_router("/users"),
    tables=(cast(Table, User.__table__),),
    prefix="/users",
    service_router=build_router(""),
    lifespan=lifespan,
)
