"""HTTP routes of /api/items."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from app.core.domain import JSONBytes
from app.core.idempotency import IdempotentRoute
from app.core.schemas import DEFAULT_LIMIT, IdPath, LimitQuery, SkipQuery
from app.items.schemas import ItemCreate, ItemRead, ItemUpdate
from app.items.service import ItemServiceDep

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No item with this id"}}

# Writes honour Idempotency-Key: a retried POST, PATCH or DELETE is answered, not redone.
router = APIRouter(prefix="/api/items", tags=["items"], route_class=IdempotentRoute)


@router.get("", response_model=list[ItemRead], response_class=JSONBytes)
async def list_items(
    service: ItemServiceDep, skip: SkipQuery = 0, limit: LimitQuery = DEFAULT_LIMIT
) -> JSONBytes:
    """Items ordered by id, ``limit`` of them after the first ``skip``."""
    return JSONBytes(await service.list_json(skip, limit))


@router.post("", response_model=ItemRead, status_code=status.HTTP_201_CREATED)
async def create_item(data: ItemCreate, service: ItemServiceDep) -> ItemRead:
    return await service.create(data)


@router.get("/{item_id}", response_model=ItemRead, response_class=JSONBytes, responses=NOT_FOUND)
async def get_item(item_id: IdPath, service: ItemServiceDep) -> JSONBytes:
    return JSONBytes(await service.get_json(item_id))


@router.patch("/{item_id}", response_model=ItemRead, responses=NOT_FOUND)
async def update_item(item_id: IdPath, data: ItemUpdate, service: ItemServiceDep) -> ItemRead:
    """Change only the fields present in the body; ``updated_at`` moves."""
    return await service.update(item_id, data)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_item(item_id: IdPath, service: ItemServiceDep) -> None:
    await service.delete(item_id)
