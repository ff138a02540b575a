"""Items: PostgreSQL is the truth, Valkey holds the JSON bodies of reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import TypeAdapter
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.cache import Cache, CacheKeys
from app.core.errors import NotFoundError
from app.items.models import Item
from app.items.schemas import ItemCreate, ItemRead, ItemUpdate

KEYS = CacheKeys("items")
_page_adapter = TypeAdapter(list[ItemRead])


class ItemService:
    """One short session per operation, opened only when PostgreSQL is needed (not on a hit)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: Cache) -> None:
        self.sessions = sessions
        self.cache = cache

    async def list_json(self, skip: int, limit: int) -> bytes:
        async def load() -> bytes:
            async with self.sessions() as session:
                rows = await session.scalars(
                    select(Item).order_by(Item.id).offset(skip).limit(limit)
                )
                return _page_adapter.dump_json([ItemRead.model_validate(row) for row in rows])

        return await self.cache.page_or_load(KEYS, skip, limit, load)

    async def get_json(self, item_id: int) -> bytes:
        async def load() -> bytes | None:
            async with self.sessions() as session:
                item = await session.get(Item, item_id)
            if item is None:
                return None
            return ItemRead.model_validate(item).model_dump_json().encode()

        body = await self.cache.get_or_load(KEYS.one(item_id), load)
        if body is None:
            raise NotFoundError("item", item_id)
        return body

    async def create(self, data: ItemCreate) -> ItemRead:
        item = Item(**data.model_dump())
        async with self.sessions() as session:
            session.add(item)
            await session.commit()
        # The cache is told only after the commit: a reader can never re-cache the old state
        # from a transaction that has not committed yet.
        await self.cache.invalidate(KEYS)
        return ItemRead.model_validate(item)

    async def update(self, item_id: int, data: ItemUpdate) -> ItemRead:
        changes = data.model_dump(exclude_unset=True)
        async with self.sessions() as session:
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
            await session.commit()
        await self.cache.invalidate(KEYS, item_id)
        return ItemRead.model_validate(item)

    async def delete(self, item_id: int) -> None:
        async with self.sessions() as session:
            statement = delete(Item).where(Item.id == item_id).returning(Item.id)
            deleted = (await session.execute(statement)).scalar_one_or_none()
            if deleted is None:
                raise NotFoundError("item", item_id)
            await session.commit()
        await self.cache.invalidate(KEYS, item_id)


async def get_item_service(request: Request) -> ItemService:
    # async: a plain `def` dependency would be run in a worker thread on every request.
    return ItemService(request.app.state.sessionmaker, request.app.state.cache)


ItemServiceDep = Annotated[ItemService, Depends(get_item_service)]
