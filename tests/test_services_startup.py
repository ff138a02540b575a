"""Start-up of the seed-001 services: their settings, schema and migrations."""

from __future__ import annotations

import asyncio
import subprocess

from alembic import command

from app.core.settings import DatabaseSettings
from app.migrate import alembic_config
from devservers import REPO_ROOT, CacheServer, GunicornServer, PostgresServer, clean_env
from tests.apps import make_settings, running_app
from tests.stack import JWT_SECRET, SEED_001
from tests.test_startup import run_module, schema_differences

ALL = ("items", "notes", *SEED_001)


def test_settings_the_domains_need_are_listed_with_the_others() -> None:
    result = run_module("app.core.settings", clean_env(APP_DOMAINS="users,orders", APP_DB_USER="u"))
    assert result.returncode == 2
    assert result.stderr == (
        "app: missing required settings: APP_CACHE_DB, APP_CACHE_HOST, APP_CACHE_PASS, "
        "APP_CACHE_PORT, APP_DB_HOST, APP_DB_NAME, APP_DB_PASS, APP_DB_PORT, "
        "APP_JWT_SECRET, APP_PAYMENTS_URL, APP_USERS_URL\n"
    )
    bad = run_module(
        "app.core.settings",
        clean_env(
            APP_DOMAINS="users,invoices",
            APP_ROOT_PATH="users/",
            APP_JWT_SECRET="short-secret",
            APP_PAYMENTS_URL="ftp://x",
        ),
    )
    assert bad.returncode == 2
    assert "short-secret" not in bad.stderr
    for expected in (
        "APP_DOMAINS (Value error, unknown domains invoices;",
        "APP_ROOT_PATH (Value error, must be empty or a path like /users",
        "APP_JWT_SECRET (Value error, must be at least 32 bytes long)",
        "APP_PAYMENTS_URL (Value error, must be http://host[:port][/path]",
    ):
        assert expected in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_gunicorn_refuses_a_users_service_without_its_secret(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    env = clean_env(**pg.env(), **cache_server.env(db=3), APP_DOMAINS="users")
    server = GunicornServer(env)
    try:
        result = subprocess.run(
            server.command(),
            cwd=REPO_ROOT,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert "app: missing required settings: APP_JWT_SECRET\n" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        server.cleanup()


async def test_migrations_build_every_domain_and_adopt_create_all(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    extra = {
        "jwt_secret": JWT_SECRET,
        "users_url": "http://127.0.0.1:1",
        "payments_url": "http://127.0.0.1:1",
        "orders_url": "http://127.0.0.1:1",
    }
    # create_all of every domain, then the first migrate adopts it at 0002, and 0003 finds
    # everything it would add already there.
    adopted = pg.create_database()
    async with running_app(make_settings(pg, cache_server, adopted, **extra), domains=ALL):
        pass
    result = run_module("app.migrate", clean_env(**pg.env(adopted), APP_DOMAINS=",".join(ALL)))
    assert result.returncode == 0, result.stderr
    assert "stamping revision 0002" in result.stderr
    assert "Running upgrade 0002 -> 0003" in result.stderr
    settings = make_settings(pg, cache_server, adopted, db_create_schema=False, **extra)
    assert await schema_differences(settings.database_url()) == []

    # Half of 0002's tables (a service started alone with create_all, by hand...): refused.
    partial = pg.create_database()
    async with running_app(
        make_settings(pg, cache_server, partial, **extra), domains=["items", "notes", "users"]
    ):
        pass
    refused = run_module("app.migrate", clean_env(**pg.env(partial), APP_DOMAINS=",".join(ALL)))
    assert refused.returncode == 1
    assert "only some of migration 0002's tables exist (['users'])" in refused.stderr

    sql = run_module("app.migrate", clean_env(**pg.env(), APP_DOMAINS=",".join(ALL)), "--sql")
    assert "CREATE TABLE payments" in sql.stdout
    assert "CONSTRAINT ck_payments_status CHECK" in sql.stdout
    assert "CONSTRAINT uq_payments_user_id_idempotency_key UNIQUE" in sql.stdout
    assert "ALTER TABLE orders ADD COLUMN currency VARCHAR(3) DEFAULT 'USD' NOT NULL" in sql.stdout
    assert "CREATE TABLE idempotency_keys" in sql.stdout


def test_0003_carries_existing_rows_over(pg: PostgresServer) -> None:
    """Rows written at 0002 keep their values, with the new columns' defaults."""
    database = pg.create_database()
    url = DatabaseSettings(
        **{k.removeprefix("APP_").lower(): v for k, v in pg.env(database).items()}
    )
    config = alembic_config(url.database_url())
    command.upgrade(config, "0002")
    pg.psql(
        "SET ROLE app;"
        "INSERT INTO users (email, username, password_hash) VALUES ('a@example.com', 'a', 'h');"
        "INSERT INTO orders (user_id, status, total, payment_id) VALUES (1, 'confirmed', 59.98, 1);"
        "INSERT INTO order_items (order_id, name, quantity, price, line_total) "
        "VALUES (1, 'Product 1', 2, 29.99, 59.98);"
        "INSERT INTO payments (user_id, order_id, idempotency_key, amount, status, transaction_id)"
        " VALUES (1, 1, 'order:1', 59.98, 'completed', 'txn_1');",
        database,
    )
    command.upgrade(config, "head")
    rows = {
        "users": "SELECT username, is_active FROM users",
        "orders": "SELECT id, status, total, currency, payment_method, payment_id FROM orders",
        "order_items": "SELECT name, quantity, price, line_total FROM order_items",
        "payments": "SELECT idempotency_key, amount, currency, payment_method, status, "
        "transaction_id FROM payments",
    }
    found = {table: pg.psql(sql, database).strip() for table, sql in rows.items()}
    assert found == {
        "users": "a|t",
        "orders": "1|confirmed|59.98|USD|credit_card|1",
        "order_items": "Product 1|2|29.99|59.98",
        "payments": "order:1|59.98|USD|credit_card|completed|txn_1",
    }
    assert asyncio.run(schema_differences(url.database_url())) == []
    # The previous release's INSERT (no currency, no method) still works: defaults.
    pg.psql(
        "SET ROLE app; INSERT INTO orders (user_id, status, total) VALUES (1, 'pending', 1)",
        database,
    )
    assert pg.psql("SELECT max(id) FROM orders", database).strip() == "2"
