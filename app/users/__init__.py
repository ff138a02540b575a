"""Users: registration, login (bearer JWT), profiles."""

from typing import cast

from sqlalchemy import Table

from app.core.domain import Domain
from app.core.idempotency import IdempotencyRecord
from app.users.models import User
from app.users.router import build_router

domain = Domain(
    name="users",
    router=build_router("/users"),
    tables=(cast(Table, User.__table__), cast(Table, IdempotencyRecord.__table__)),
    prefix="/users",
    service_router=build_router(""),
)
