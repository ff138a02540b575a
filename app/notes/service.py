"""Notes: PostgreSQL is the truth, Valkey holds the JSON bodies of reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.cache import CacheKeys
from app.core.crud import CachedCrud
from app.core.state import CacheDep, SessionsDep
from app.notes.models import Note
from app.notes.schemas import NoteRead

KEYS = CacheKeys("notes")


class NoteService(CachedCrud[NoteRead]):
    model = Note
    read_schema = NoteRead
    keys = KEYS
    noun = "note"


async def get_note_service(sessions: SessionsDep, cache: CacheDep) -> NoteService:
    # async: a plain `def` dependency would be run in a worker thread on every request.
    return NoteService(sessions, cache)


NoteServiceDep = Annotated[NoteService, Depends(get_note_service)]
