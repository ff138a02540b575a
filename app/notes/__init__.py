"""Notes: a title and a content body; created, read and deleted, never edited."""

from app.core.domain import Domain
from app.notes.models import Note
from app.notes.router import router

domain = Domain(name="notes", router=router, tables=(Note.__table__,))
