"""Async SQLAlchemy on asyncpg: the declarative base, the engine, its sessions and the schema.

The engine (and so its pool) is created inside the application's lifespan, that is once
per Gunicorn worker after the fork: a pool inherited across a fork would share sockets
between processes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import MetaData, Table, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
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


# SQLSTATEs that mean "PostgreSQL cannot serve us now", not "the request or the code is
# wrong": the same request may well succeed after a restart, a failover or a burst, so it
# is answered 503 with Retry-After. Classes: 08 connection exception (lost, refused,
# asyncpg's ConnectionDoesNotExistError), 53 insufficient resources (too many
# connections, out of memory, disk full).
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53"})
UNAVAILABLE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: a fast shutdown or pg_terminate_backend
        "57P02",  # crash_shutdown: another backend crashed
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
        "57P05",  # idle_session_timeout: the server closed an idle connection
        "57014",  # query_canceled: a statement timeout or an operator's cancel
        "25006",  # read_only_sql_transaction: a standby (a failover in progress)
    }
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means PostgreSQL cannot be reached or cannot serve now (HTTP 503),
    rather than a bug in the request's handling (HTTP 500).

    The driver's errors arrive raw (a failed connect), or wrapped by SQLAlchemy
    (``DBAPIError.orig``, itself raised from asyncpg's error with the same SQLSTATE).
    """
    current: BaseException | None = exc
    for _ in range(4):  # at most SQLAlchemy's error, its adapted one, asyncpg's, their cause
        if current is None:
            return False
        # Refused, reset, timed out (asyncpg's timeouts are TimeoutError, an OSError);
        # no pooled connection free in time; and what DB-API calls operational errors.
        if isinstance(current, (OSError, PoolTimeoutError, OperationalError)):
            return True
        if isinstance(current, DBAPIError):
            if current.connection_invalidated:
                return True
            current = current.orig
            continue
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            return sqlstate in UNAVAILABLE_SQLSTATES or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
        current = current.__cause__
    return False


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
        # Errors quote the SQL but never its values (passwords' hashes, users' text).
        hide_parameters=True,
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
