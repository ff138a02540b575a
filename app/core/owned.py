"""Rows that belong to one user: read one, list a page, never another user's.

Orders and payments are read the same way: by id *and* owner, so a row of another user
does not exist for the caller (404, never 403: whether an id exists is nobody else's
business), and lists are the caller's rows in id order. A service subclasses
:class:`OwnedRows`, naming its model (with ``id`` and ``user_id`` columns) and the noun its
404 uses.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import NotFoundError

RowT = TypeVar("RowT")


class OwnedRows(Generic[RowT]):
    model: ClassVar[type[Any]]
    kind: ClassVar[str]  # "order", "payment": the 404 says "order 7 not found"
    sessions: async_sessionmaker[AsyncSession]

    async def get(self, user_id: int, row_id: int) -> RowT:
        model = self.model
        async with self.sessions() as session:
            row: RowT | None = await session.scalar(
                select(model).where(model.id == row_id, model.user_id == user_id)
            )
        if row is None:
            raise NotFoundError(self.kind, row_id)
        return row

    async def list(self, user_id: int, skip: int, limit: int) -> list[RowT]:
        model = self.model
        async with self.sessions() as session:
            rows = await session.scalars(
                select(model)
                .where(model.user_id == user_id)
                .order_by(model.id)
                .offset(skip)
                .limit(limit)
            )
            return list(rows)
