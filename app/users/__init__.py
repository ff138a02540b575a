"""Users: registration, login (bearer JWT), profiles."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from fastapi import FastAPI
from sqlalchemy import Table

from app.core.domain import Domain
from app.core.idempotency import IdempotencyRecord
from app.core.settings import Settings
from app.users.lockout import LoginLockout
from app.users.models import User
from app.users.passwords import Passwords
from app.users.router import build_router
from app.users.service import LocalUserCheck


@asynccontextmanager
async def lifespan(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    app.state.passwords = Passwords(settings)
    app.state.login_lockout = LoginLockout(app.state.cache, settings)
    # Tokens are checked against the table itself here, also for the other domains of a
    # single app (app/core/auth.py), whichever lifespan ran first.
    app.state.user_check = LocalUserCheck(app.state.sessionmaker)
    try:
        yield
    finally:
        if hasattr(app.state, "user_check"):
            del app.state.user_check


domain = Domain(
    name="users",
    router=build_router("/users"),
    tables=(cast(Table, User.__table__), cast(Table, IdempotencyRecord.__table__)),
    prefix="/users",
    service_router=build_router(""),
    lifespan=lifespan,
)
