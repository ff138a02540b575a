"""Request and response bodies of /api/items."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, model_validator

from app.core.schemas import Name, Text, Timestamp


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Text | None = None


class ItemUpdate(BaseModel):
    """A partial update: only the fields present in the body change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Text | None = None

    @model_validator(mode="after")
    def _name_not_null(self) -> Self:
        # `description: null` clears the description; a name is required, so null is refused.
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null")
        return self


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    created_at: Timestamp
    updated_at: Timestamp
