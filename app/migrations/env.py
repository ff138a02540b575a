"""Alembic environment: the app's models, its settings, and one migrator at a time.

The URL comes from the ``APP_DB_*`` settings (or ``config.attributes["url"]``), never
from ``alembic.ini``, so no password is written to a file. Migrations run in one
transaction that first takes the same advisory lock as the start-up ``create_all``, so
two deploys (or a deploy and a starting app) never change the schema at once.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import URL, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import app.items.models
import app.notes.models
import app.orders.models
import app.payments.models
import app.users.models  # noqa: F401  # register every table on the metadata
from app.core.database import SCHEMA_LOCK_KEY, Base
from app.core.settings import load_database_settings

target_metadata = Base.metadata

if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)  # the developer's alembic.ini


def _url() -> URL:
    url: URL | None = context.config.attributes.get("url")
    return url if url is not None else load_database_settings().database_url()


def run_migrations_offline() -> None:
    """``--sql``: print the SQL instead of running it."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
