"""Async SQLAlchemy on asyncpg: the declarative base, the engine, its sessions and the schema.

The engine (and so its pool) is created inside the application's lifespan, that is once
per Gunicorn worker after the fork: a pool inherited across a fork would share sockets
between processes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import MetaData, Table, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from app.core.settings import Settings

# Any 64-bit constant works, as long as every process that creates the schema uses the
# same one; this one spells "webstack" in ASCII.
SCHEMA_LOCK_KEY = 0x7765627374616368 & 0x7FFFFFFFFFFFFFFF

# Stable constraint and index names, so Alembic migrations can refer to them. Primary keys
# keep PostgreSQL's own names (`items_pkey`), as in databases the seed created.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every domain's models."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(settings: Settings) -> AsyncEngine:
    """An engine whose pool is sized from the settings and checks connections before use."""
    return create_async_engine(
        settings.database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        pool_pre_ping=True,
        connect_args={
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_command_timeout,
            "server_settings": {"application_name": "webstack-app"},
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for the domains' services: one short session per operation.

    expire_on_commit=False: objects are serialised after their session has committed.
    """
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def create_schema(engine: AsyncEngine, tables: Sequence[Table]) -> None:
    """Create the missing ``tables``, serialised across processes and hosts.

    The transaction-scoped advisory lock makes every other starter wait until the first
    one has committed its ``CREATE TABLE``s; they then find the tables and create nothing.
    """
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        await conn.run_sync(Base.metadata.create_all, tables=list(tables), checkfirst=True)
