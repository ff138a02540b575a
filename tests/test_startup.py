"""Start-up: concurrent schema creation, missing settings, and the Alembic migrations."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.database import Base
from app.core.settings import DOMAIN_NAMES
from app.migrate import owned_tables
from devservers import REPO_ROOT, CacheServer, PostgresServer, clean_env
from tests.apps import make_settings, running_app, server_env


def run_module(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_processes_starting_at_once_on_an_empty_database(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    database = pg.create_database()
    # A cache database of its own: list pages other tests cached must not answer here.
    env = clean_env(**pg.env(database), **cache_server.env(db=2))
    cache_server.flush(db=2)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.start_app_once"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:  # all of them go at the same moment
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
        assert out.strip().endswith("200 []")
    assert (
        pg.psql(
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
            "WHERE schemaname = 'public'",
            database,
        ).strip()
        == "idempotency_keys,items,notes"  # every domain's writes record their keys
    )


def test_missing_settings_are_listed_in_one_message() -> None:
    result = run_module("app.core.settings", clean_env(APP_DB_USER="u", APP_CACHE_PORT="x"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        "app: missing required settings: APP_CACHE_DB, APP_CACHE_HOST, APP_CACHE_PASS, "
        "APP_DB_HOST, APP_DB_NAME, APP_DB_PASS, APP_DB_PORT; "
        "invalid settings: APP_CACHE_PORT (Input should be a valid integer, unable to parse "
        "string as an integer)"
    )


def test_settings_check_masks_secrets(pg: PostgresServer, cache_server: CacheServer) -> None:
    result = run_module("app.core.settings", clean_env(**server_env(pg, cache_server)))
    assert result.returncode == 0, result.stderr
    assert "APP_CACHE_TTL=60" in result.stdout
    assert pg.password not in result.stdout
    assert cache_server.password not in result.stdout


async def schema_differences(url: URL) -> list[object]:
    """What Alembic's autogenerate would still change to match the models."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()


async def test_migrations_build_the_models_schema(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    database = pg.create_database()
    # Migrations need no cache settings; a database of every domain gets every table.
    env = clean_env(**pg.env(database), APP_DOMAINS=",".join(DOMAIN_NAMES))
    assert run_module("app.migrate", env, "--check").returncode == 1
    result = run_module("app.migrate", env)
    assert result.returncode == 0, result.stderr
    assert "Running upgrade  -> 0001" in result.stderr
    settings = make_settings(pg, cache_server, database, db_create_schema=False)
    assert await schema_differences(settings.database_url()) == []
    assert run_module("app.migrate", env, "--check").returncode == 0
    again = run_module("app.migrate", env)  # a second deploy changes nothing
    assert again.returncode == 0
    assert "Running upgrade" not in again.stderr

    async with running_app(settings) as api:
        assert (await api.client.post("/api/items", json={"name": "m"})).status_code == 201
        assert (await api.client.get("/api/items/1")).json()["name"] == "m"


async def test_migrate_adopts_a_schema_made_by_create_all(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    database = pg.create_database()
    async with running_app(make_settings(pg, cache_server, database)) as api:
        assert (await api.client.post("/api/items", json={"name": "kept"})).status_code == 201
    env = clean_env(**pg.env(database))
    result = run_module("app.migrate", env)
    assert result.returncode == 0, result.stderr
    assert "stamping revision 0001" in result.stderr
    assert run_module("app.migrate", env, "--check").returncode == 0
    assert pg.psql("SELECT name FROM items", database).strip() == "kept"


async def table_names(url: URL) -> set[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("domains", "expected"),
    [
        ("items,notes", {"items", "notes", "idempotency_keys"}),
        ("users", {"users", "idempotency_keys"}),
        ("orders", {"orders", "order_items", "idempotency_keys"}),
        ("payments", {"payments", "idempotency_keys"}),
    ],
)
async def test_each_service_migrates_only_its_own_tables(
    pg: PostgresServer, cache_server: CacheServer, domains: str, expected: set[str]
) -> None:
    """A service's own database (user_db, ...) gets its domains' tables and no other's."""
    database = pg.create_database()
    env = clean_env(**pg.env(database), APP_DOMAINS=domains)
    result = run_module("app.migrate", env)
    assert result.returncode == 0, result.stderr
    assert "Running upgrade 0002 -> 0003" in result.stderr  # at the one head, like the others
    url = make_settings(pg, cache_server, database).database_url()
    assert await table_names(url) == expected | {"alembic_version"}
    assert owned_tables(domains.split(",")) == expected
    # The same schema as the models of those tables, nothing missing, nothing more.
    differences = [d for d in await schema_differences(url) if not (d[0] == "remove_table")]
    owned = [d for d in differences if _table_of(d) in expected]
    assert owned == [], owned
    assert run_module("app.migrate", env, "--check").returncode == 0
    again = run_module("app.migrate", env)
    assert again.returncode == 0
    assert "Running upgrade" not in again.stderr


def _table_of(difference: object) -> str | None:
    """The table an autogenerate difference is about (an add_table, add_index, ...)."""
    item = difference[-1] if isinstance(difference, tuple) else None
    table = getattr(item, "table", item)
    return getattr(table, "name", None)


async def test_a_service_database_made_by_create_all_is_adopted(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    """users alone, its tables made by the app's start-up: stamped 0002, then upgraded."""
    database = pg.create_database()
    pg.psql(f"SET ROLE {pg.user}; CREATE TABLE users (id serial PRIMARY KEY)", database)
    result = run_module("app.migrate", clean_env(**pg.env(database), APP_DOMAINS="users"))
    assert "stamping revision 0002" in result.stderr, result.stderr


def test_migrate_refuses_a_partial_schema(pg: PostgresServer) -> None:
    database = pg.create_database()
    pg.psql(f'ALTER DATABASE "{database}" OWNER TO {pg.user}')
    pg.psql(f"SET ROLE {pg.user}; CREATE TABLE items (id serial PRIMARY KEY)", database)
    result = run_module("app.migrate", clean_env(**pg.env(database)))
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("app.migrate: only some of the first migration's tables")
    assert "Traceback" not in result.stderr


def test_migrate_sql_prints_the_ddl(pg: PostgresServer) -> None:
    result = run_module("app.migrate", clean_env(**pg.env()), "--sql")
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE items" in result.stdout
    assert "CREATE INDEX ix_items_name ON items (name)" in result.stdout
