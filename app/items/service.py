"""Items: PostgreSQL is the truth, Valkey holds the JSON bodies of reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy import func, update

from app.core.cache import CacheKeys
from app.core.crud import CachedCrud
from app.core.errors import NotFoundError
from app.core.idempotency import after_commit, unit_of_work
from app.core.state import CacheDep, SessionsDep
from app.items.models import Item
from app.items.schemas import ItemRead, ItemUpdate

KEYS = CacheKeys("items")


class ItemService(CachedCrud[ItemRead]):
    model = Item
    read_schema = ItemRead
    keys = KEYS
    noun = "item"

    async def update(self, item_id: int, data: ItemUpdate) -> ItemRead:
        changes = data.model_dump(exclude_unset=True)
        async with unit_of_work(self.sessions) as session:
            if not changes:
                # Nothing to change: answer with the current state, and touch nothing.
                current = await session.get(Item, item_id)
                if current is None:
                    raise NotFoundError("item", item_id)
                return ItemRead.model_validate(current)
            statement = (
                update(Item)
                .where(Item.id == item_id)
                .values(**changes, updated_at=func.now())
                .returning(Item)
                .execution_options(synchronize_session=False)
            )
            item = (await session.scalars(statement)).one_or_none()
            if item is None:
                raise NotFoundError("item", item_id)
        await after_commit(lambda: self.cache.invalidate(KEYS, item_id))
        return ItemRead.model_validate(item)


async def get_item_service(sessions: SessionsDep, cache: CacheDep) -> ItemService:
    # async: a plain `def` dependency would be run in a worker thread on every request.
    return ItemService(sessions, cache)


ItemServiceDep = Annotated[ItemService, Depends(get_item_service)]
