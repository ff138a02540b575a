"""Request and response bodies of /api/notes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from app.core.schemas import Name, Text, Timestamp


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Name
    content: Text


class NoteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    content: str
    created_at: Timestamp
