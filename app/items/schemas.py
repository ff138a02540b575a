"""Request and response bodies of /api/items."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from app.core.schemas import Name, Text, Timestamp


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Text | None = None


class ItemUpdate(BaseModel):
    """A partial update: only the fields present in the body change."""

    model_config = ConfigDict(extra="forbid")

    # May be left out, never null (an item always has a name): typed without None, so the
    # schema says so and a null is refused like any other non-string, naming the field.
    # `description: null` clears the description.
    name: Name = None  # type: ignore[assignment]
    description: Text | None = None


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    created_at: Timestamp
    updated_at: Timestamp
