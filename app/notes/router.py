"""HTTP routes of /api/notes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from app.core.domain import JSONBytes
from app.core.idempotency import IdempotentRoute
from app.core.schemas import DEFAULT_LIMIT, IdPath, LimitQuery, SkipQuery
from app.notes.schemas import NoteCreate, NoteRead
from app.notes.service import NoteServiceDep

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No note with this id"}}

# Writes honour Idempotency-Key: a retried POST, PATCH or DELETE is answered, not redone.
router = APIRouter(prefix="/api/notes", tags=["notes"], route_class=IdempotentRoute)


@router.get("", response_model=list[NoteRead], response_class=JSONBytes)
async def list_notes(
    service: NoteServiceDep, skip: SkipQuery = 0, limit: LimitQuery = DEFAULT_LIMIT
) -> JSONBytes:
    """Notes ordered by id, ``limit`` of them after the first ``skip``."""
    return JSONBytes(await service.list_json(skip, limit))


@router.post("", response_model=NoteRead, status_code=status.HTTP_201_CREATED)
async def create_note(data: NoteCreate, service: NoteServiceDep) -> NoteRead:
    return await service.create(data)


@router.get("/{note_id}", response_model=NoteRead, response_class=JSONBytes, responses=NOT_FOUND)
async def get_note(note_id: IdPath, service: NoteServiceDep) -> JSONBytes:
    return JSONBytes(await service.get_json(note_id))


@router.delete("/{note_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_note(note_id: IdPath, service: NoteServiceDep) -> None:
    await service.delete(note_id)
