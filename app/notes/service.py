"""Notes: PostgreSQL is the truth, Valkey holds the JSON bodies of reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import TypeAdapter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.cache import Cache, CacheKeys
from app.core.errors import NotFoundError
from app.notes.models import Note
from app.notes.schemas import NoteCreate, NoteRead

KEYS = CacheKeys("notes")
_page_adapter = TypeAdapter(list[NoteRead])


class NoteService:
    """One short session per operation, opened only when PostgreSQL is needed (not on a hit)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: Cache) -> None:
        self.sessions = sessions
        self.cache = cache

    async def list_json(self, skip: int, limit: int) -> bytes:
        async def load() -> bytes:
            async with self.sessions() as session:
                rows = await session.scalars(
                    select(Note).order_by(Note.id).offset(skip).limit(limit)
                )
                return _page_adapter.dump_json([NoteRead.model_validate(row) for row in rows])

        return await self.cache.page_or_load(KEYS, skip, limit, load)

    async def get_json(self, note_id: int) -> bytes:
        async def load() -> bytes | None:
            async with self.sessions() as session:
                note = await session.get(Note, note_id)
            if note is None:
                return None
            return NoteRead.model_validate(note).model_dump_json().encode()

        body = await self.cache.get_or_load(KEYS.one(note_id), load)
        if body is None:
            raise NotFoundError("note", note_id)
        return body

    async def create(self, data: NoteCreate) -> NoteRead:
        note = Note(**data.model_dump())
        async with self.sessions() as session:
            session.add(note)
            await session.commit()
        # Invalidate after the commit, so no reader re-caches the state before it.
        await self.cache.invalidate(KEYS)
        return NoteRead.model_validate(note)

    async def delete(self, note_id: int) -> None:
        async with self.sessions() as session:
            statement = delete(Note).where(Note.id == note_id).returning(Note.id)
            deleted = (await session.execute(statement)).scalar_one_or_none()
            if deleted is None:
                raise NotFoundError("note", note_id)
            await session.commit()
        await self.cache.invalidate(KEYS, note_id)


async def get_note_service(request: Request) -> NoteService:
    # async: a plain `def` dependency would be run in a worker thread on every request.
    return NoteService(request.app.state.sessionmaker, request.app.state.cache)


NoteServiceDep = Annotated[NoteService, Depends(get_note_service)]
