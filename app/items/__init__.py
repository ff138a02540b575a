"""Items: full CRUD on a name and an optional description."""

from typing import cast

from sqlalchemy import Table

from app.core.domain import Domain
from app.core.idempotency import IdempotencyRecord
from app.items.models import Item
from app.items.router import router

domain = Domain(
    name="items",
    router=router,
    tables=(cast(Table, Item.__table__), cast(Table, IdempotencyRecord.__table__)),
)
