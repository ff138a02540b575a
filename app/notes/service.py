"""Notes: PostgreSQL is the truth, Valkey holds the JSON bodies of reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import TypeAdapter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache, CacheKeys
from app.core.database import SessionDep
from app.core.errors import NotFoundError
from app.notes.models import Note
from app.notes.schemas import NoteCreate, NoteRead

KEYS = CacheKeys("notes")
_page_adapter = TypeAdapter(list[NoteRead])


class NoteService:
    def __init__(self, session: AsyncSession, cache: Cache) -> None:
        self.session = session
        self.cache = cache

    async def list_json(self, skip: int, limit: int) -> bytes:
        async def load() -> bytes:
            rows = await self.session.scalars(
                select(Note).order_by(Note.id).offset(skip).limit(limit)
            )
            return _page_adapter.dump_json([NoteRead.model_validate(row) for row in rows])

        return await self.cache.page_or_load(KEYS, skip, limit, load)

    async def get_json(self, note_id: int) -> bytes:
        async def load() -> bytes | None:
            note = await self.session.get(Note, note_id)
            if note is None:
                return None
            return NoteRead.model_validate(note).model_dump_json().encode()

        body = await self.cache.get_or_load(KEYS.one(note_id), load)
        if body is None:
            raise NotFoundError("note", note_id)
        return body

    async def create(self, data: NoteCreate) -> NoteRead:
        note = Note(**data.model_dump())
        self.session.add(note)
        await self.session.commit()
        await self.cache.invalidate(KEYS)
        return NoteRead.model_validate(note)

    async def delete(self, note_id: int) -> None:
        statement = delete(Note).where(Note.id == note_id).returning(Note.id)
        deleted = (await self.session.execute(statement)).scalar_one_or_none()
        if deleted is None:
            raise NotFoundError("note", note_id)
        await self.session.commit()
        await self.cache.invalidate(KEYS, note_id)


def get_note_service(request: Request, session: SessionDep) -> NoteService:
    return NoteService(session, request.app.state.cache)


NoteServiceDep = Annotated[NoteService, Depends(get_note_service)]
