"""Cache-aside reads and cache-invalidating writes of one table, shared by the domains.

PostgreSQL is the truth; Valkey holds the JSON bodies of reads (one object, one list page).
A domain service subclasses :class:`CachedCrud` naming its model, read schema, cache keys
and the noun used in 404s, and adds what only it has (items' PATCH).

Writes go through :func:`~app.core.idempotency.unit_of_work`: with an ``Idempotency-Key``
they commit together with the key and its answer, and the cache is told only after that
commit (:func:`~app.core.idempotency.after_commit`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.cache import Cache, CacheKeys
from app.core.errors import NotFoundError
from app.core.idempotency import after_commit, unit_of_work

ReadT = TypeVar("ReadT", bound=BaseModel)


class CachedCrud(Generic[ReadT]):
    """One short session per operation, opened only when PostgreSQL is needed (not on a hit)."""

    model: ClassVar[type[Any]]  # the SQLAlchemy model, with an integer `id`
    read_schema: ClassVar[type[BaseModel]]
    keys: ClassVar[CacheKeys]
    noun: ClassVar[str]  # "item" in "item 7 not found"
    _page_adapter: ClassVar[TypeAdapter[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._page_adapter = TypeAdapter(list[cls.read_schema])  # type: ignore[name-defined]

    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: Cache) -> None:
        self.sessions = sessions
        self.cache = cache

    def read(self, row: Any) -> ReadT:
        return self.read_schema.model_validate(row)  # type: ignore[return-value]

    async def list_json(self, skip: int, limit: int) -> bytes:
        async def load() -> bytes:
            async with self.sessions() as session:
                rows = await session.scalars(
                    select(self.model).order_by(self.model.id).offset(skip).limit(limit)
                )
                return self._page_adapter.dump_json([self.read(row) for row in rows])

        return await self.cache.page_or_load(self.keys, skip, limit, load)

    async def get_json(self, object_id: int) -> bytes:
        async def load() -> bytes | None:
            async with self.sessions() as session:
                row = await session.get(self.model, object_id)
            if row is None:
                return None
            return self.read(row).model_dump_json().encode()

        body = await self.cache.get_or_load(self.keys.one(object_id), load)
        if body is None:
            raise NotFoundError(self.noun, object_id)
        return body

    async def create(self, data: BaseModel) -> ReadT:
        row = self.model(**data.model_dump())
        async with unit_of_work(self.sessions) as session:
            session.add(row)
            await session.flush()  # the id and the server's timestamps, before the answer
        # The cache is told only after the commit: a reader can never re-cache the old state
        # from a transaction that has not committed yet.
        await after_commit(lambda: self.cache.invalidate(self.keys))
        return self.read(row)

    async def delete(self, object_id: int) -> None:
        async with unit_of_work(self.sessions) as session:
            statement = (
                delete(self.model).where(self.model.id == object_id).returning(self.model.id)
            )
            deleted = (await session.execute(statement)).scalar_one_or_none()
            if deleted is None:
                raise NotFoundError(self.noun, object_id)
        await after_commit(lambda: self.cache.invalidate(self.keys, object_id))
