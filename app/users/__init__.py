"""Users: registration, login (bearer JWT), profiles."""

from typing import cast

from sqlalchemy import Table

from app.core.domain import Domain
from app.core.idempotency import IdempotencyRecord
from app.users.models import User
from app.users.router import router

domain = Domain(
    name="users",
    router=router,
    tables=(cast(Table, User.__table__), cast(Table, IdempotencyRecord.__table__)),
)
