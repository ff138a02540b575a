"""Notes: PostgreSQL is the truth, Valkey holds the JSON bodies of reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.cache import CacheKeys
from app.core.crud import CachedCrud
from app.notes.models import Note
from app.notes.schemas import NoteRead

KEYS = CacheKeys("notes")


class NoteService(CachedCrud[NoteRead]):
    model = Note
    read_schema = NoteRead
    keys = KEYS
    noun = "note"


async def get_note_service(request: Request) -> NoteService:
    # async: a plain `def` dependency would be run in a worker thread on every request.
    return NoteService(request.app.state.sessionmaker, request.app.state.cache)


NoteServiceDep = Annotated[NoteService, Depends(get_note_service)]
