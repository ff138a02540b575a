"""Notes: a title and a content body; created, read and deleted, never edited."""

from typing import cast

from sqlalchemy import Table

from app.core.domain import Domain
from app.core.idempotency import IdempotencyRecord
from app.notes.models import Note
from app.notes.router import router

domain = Domain(
    name="notes",
    router=router,
    tables=(cast(Table, Note.__table__), cast(Table, IdempotencyRecord.__table__)),
)
