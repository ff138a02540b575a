"""Bring the database schema to the newest migration: ``python -m app.migrate``.

This is the production path: a deploy runs it once (one host, before the app restarts),
and the app runs with ``APP_DB_CREATE_SCHEMA=false``. The start-up ``create_all`` stays
the default only for compatibility with the seed's behaviour.

A database whose tables were made by that ``create_all`` (no ``alembic_version`` table
yet) is adopted: it is stamped with the newest revision whose tables, and those of every
revision before it, are all present (``0001`` for items and notes, ``0002`` once users,
orders and payments were served too), and then upgraded. A revision's tables present only
in part, or present while an earlier revision's are missing, stop it with a message.

Each service has a database of its own and migrates only its own domains' tables there
(``APP_DOMAINS``, default as the app's: items and notes): the one migrations tree is
filtered by :mod:`app.migrations.scope`, and adopting reads only those tables.

Options: ``--sql`` prints the SQL of a full upgrade instead of running it; ``--check``
exits 1 if the database is not at the newest revision. Reads only the ``APP_DB_*``
settings and ``APP_DOMAINS``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Iterable
from importlib import import_module
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.settings import (
    SettingsError,
    apply_env_files,
    env_files_from_environment,
    load_database_settings,
    load_serving_settings,
)

logger = logging.getLogger("app.migrate")

MIGRATIONS = Path(__file__).parent / "migrations"
# The tables each revision creates, oldest first: what adopting a create_all schema reads.
REVISION_TABLES: tuple[tuple[str, frozenset[str]], ...] = (
    ("0001", frozenset({"items", "notes"})),
    ("0002", frozenset({"users", "orders", "order_items", "payments"})),
)


def owned_tables(domains: Iterable[str]) -> frozenset[str]:
    """The tables of ``domains`` (each domain's ``tables``, app/<domain>/__init__.py)."""
    return frozenset(
        table.name for name in domains for table in import_module(f"app.{name}").domain.tables
    )


def alembic_config(url: URL, tables: frozenset[str] | None = None) -> Config:
    """Alembic's config for ``url``; ``tables``: what its revisions may touch (all: None)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    config.attributes["tables"] = tables
    return config


def _inspect(connection: Connection) -> tuple[set[str], str | None]:
    tables = set(inspect(connection).get_table_names())
    return tables, MigrationContext.configure(connection).get_current_revision()


async def schema_state(url: URL) -> tuple[set[str], str | None]:
    """The tables present and the current Alembic revision (``None`` if never migrated)."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_inspect)
    finally:
        await engine.dispose()


def adopted_revision(tables: set[str], owned: frozenset[str] | None = None) -> str | None:
    """The revision a schema made by ``create_all`` is at (``None``: an empty database).

    Only the ``owned`` tables count (all when ``None``): a revision that creates none of
    them is passed over, neither present nor missing.
    """
    adopted: str | None = None
    gap = False
    for index, (revision, every) in enumerate(REVISION_TABLES):
        created = every if owned is None else every & owned
        if not created:
            continue
        which = "the first migration's" if index == 0 else f"migration {revision}'s"
        present = created & tables
        if not present:
            gap = True
        elif present != created:
            raise RuntimeError(
                f"only some of {which} tables exist ({sorted(present)}); "
                "refusing to guess: fix the schema by hand"
            )
        elif gap:
            raise RuntimeError(
                f"{which} tables exist but an earlier migration's do not; "
                "refusing to guess: fix the schema by hand"
            )
        else:
            adopted = revision
    return adopted


def upgrade(url: URL, owned: frozenset[str] | None = None) -> None:
    config = alembic_config(url, owned)
    tables, revision = asyncio.run(schema_state(url))
    if revision is None and "alembic_version" not in tables:
        adopted = adopted_revision(tables, owned)
        if adopted is not None:
            logger.info("tables made by the app's create_all: stamping revision %s", adopted)
            command.stamp(config, adopted)
    command.upgrade(config, "head")


def is_current(url: URL) -> bool:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    _, revision = asyncio.run(schema_state(url))
    return revision == head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.migrate", description=__doc__.split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sql", action="store_true", help="print the SQL, change nothing")
    mode.add_argument("--check", action="store_true", help="exit 1 unless at the newest revision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        files = env_files_from_environment()  # a deployed service's settings files
        if files:
            apply_env_files(files)
        # The service's metrics directory is its running master's (RuntimeDirectory, gone
        # while it is stopped, never there before its first start): a migration run serves
        # no metrics, and its import of the domains must not need that directory.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        url = load_database_settings().database_url()
        owned = owned_tables(load_serving_settings().domains)
    except SettingsError as exc:
        print(f"app.migrate: {exc}", file=sys.stderr)
        return 2
    if args.sql:
        command.upgrade(alembic_config(url, owned), "head", sql=True)
        return 0
    if args.check:
        current = is_current(url)
        print("schema is current" if current else "schema needs `python -m app.migrate`")
        return 0 if current else 1
    try:
        upgrade(url, owned)
    except RuntimeError as exc:
        print(f"app.migrate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
