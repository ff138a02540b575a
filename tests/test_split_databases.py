"""playbooks/split-databases.yml's copy (roles/postgresql/files/pg_split.py) against a real
PostgreSQL: a site whose services shared `appdb` moves each service's tables into its own
database, owned by its own role, counted on both sides, the shared database untouched;
then the service's migrations adopt the copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from app.core.settings import DOMAIN_NAMES
from devservers import REPO_ROOT, PostgresServer, clean_env
from tests.role_plugins import SERVICES, load
from tests.test_startup import run_module

SPLIT = REPO_ROOT / "roles/postgresql/files/pg_split.py"


def split(pg: PostgresServer, source: str, target: str, role: str, *tables: str):
    args = ["--from", source, "--to", target, "--role", role, "--bindir", str(pg.bindir)]
    args += ["--host", str(pg.dir), "--port", str(pg.port)]
    for table in tables:
        args += ["--table", table]
    # The superuser over the server's socket (trusted there), as the playbook runs it.
    env = {**os.environ, "PGUSER": "postgres"}
    return subprocess.run(
        [sys.executable, str(SPLIT), *args], capture_output=True, text=True, env=env, check=False
    )


def service_database(pg: PostgresServer, name: str) -> tuple[str, str, str]:
    """What roles/postgresql makes for a service: a role, its database, CONNECT its own."""
    role, database, password = f"{name}_user", f"{name}_db", f"pw-{name}-secret"
    pg.psql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    pg.psql(f"CREATE DATABASE {database} OWNER {role}")
    pg.psql(f"REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC")
    pg.psql(f"ALTER SCHEMA public OWNER TO {role}", database)
    return role, database, password


def service_env(
    pg: PostgresServer, role: str, password: str, database: str, domains: str
) -> dict[str, str]:
    """A service's settings, as its own role on its own database (what roles/app writes)."""
    return clean_env(
        APP_DB_USER=role,
        APP_DB_PASS=password,
        APP_DB_HOST=pg.host,
        APP_DB_PORT=str(pg.port),
        APP_DB_NAME=database,
        APP_DOMAINS=domains,
    )


@pytest.fixture
def shared(pg: PostgresServer) -> str:
    """A database every service shared, at the newest revision, with rows of each."""
    database = pg.create_database()
    env = clean_env(**pg.env(database), APP_DOMAINS=",".join(DOMAIN_NAMES))
    assert run_module("app.migrate", env).returncode == 0
    pg.psql(
        "INSERT INTO users (email, username, password_hash) SELECT 'u' || i || '@x.org', "
        "'u' || i, 'h' FROM generate_series(1, 25) i;"
        "INSERT INTO orders (user_id, status, total) SELECT i, 'confirmed', 10 "
        "FROM generate_series(1, 7) i;"
        "INSERT INTO order_items (order_id, name, quantity, price, line_total) "
        "SELECT o.id, 'n', 1, 10, 10 FROM orders o, generate_series(1, 2);"
        "INSERT INTO payments (user_id, order_id, amount, status) VALUES (1, 1, 10, 'completed');"
        "INSERT INTO items (name) VALUES ('kept');"
        "INSERT INTO idempotency_keys (principal, route, key, fingerprint) "
        "VALUES ('u1', 'POST /orders', 'k', 'f')",
        database,
    )
    return database


def test_a_service_table_moves_to_its_own_database_once(pg: PostgresServer, shared: str) -> None:
    role, target, password = service_database(pg, "t1users")
    before = pg.psql("SELECT count(*), max(id) FROM users", shared).strip()

    first = split(pg, shared, target, role, "users")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"action": "copied", "tables": {"users": [25, 25]}}
    owner = pg.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'users'", target)
    assert owner.strip() == role
    # Only its own table: nothing of the other services, no answers of theirs.
    every = "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'"
    tables = pg.psql(every, target).strip()
    assert tables == "users"
    # The shared database is only read.
    assert pg.psql("SELECT count(*), max(id) FROM users", shared).strip() == before

    # Run again (the playbook is idempotent): nothing copied twice.
    again = split(pg, shared, target, role, "users")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["action"] == "present"
    assert pg.psql("SELECT count(*) FROM users", target).strip() == "25"

    # The service's own migrations adopt the copy (0002) and add what 0003 adds for it.
    env = service_env(pg, role, password, target, "users")
    migrated = run_module("app.migrate", env)
    assert migrated.returncode == 0, migrated.stderr
    assert "stamping revision 0002" in migrated.stderr
    assert run_module("app.migrate", env, "--check").returncode == 0
    # Its serial goes on after the copied rows (the sequence came along), as its role.
    new_id = pg.psql(
        f"SET ROLE {role}; INSERT INTO users (email, username, password_hash) "
        "VALUES ('new@x.org', 'new', 'h') RETURNING id",
        target,
    ).strip()
    assert int(new_id) == 26


def test_orders_move_with_their_lines(pg: PostgresServer, shared: str) -> None:
    role, target, _ = service_database(pg, "t2orders")
    result = split(pg, shared, target, role, "orders", "order_items")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tables"] == {"order_items": [14, 14], "orders": [7, 7]}
    # The foreign key between the two came along.
    fks = pg.psql("SELECT conname FROM pg_constraint WHERE contype = 'f'", target).strip()
    assert fks == "fk_order_items_order_id_orders"


def test_a_failed_restore_leaves_the_target_as_it_was(pg: PostgresServer, shared: str) -> None:
    """The dump streams into the restore; the restore failing half-way (a sequence of the
    same name is in the way, after the first table was made) names pg_restore's error and
    rolls back everything, and the next run copies from scratch."""
    role, target, _ = service_database(pg, "t5orders")
    pg.psql(f"SET ROLE {role}; CREATE SEQUENCE order_items_id_seq", target)
    result = split(pg, shared, target, role, "orders", "order_items")
    assert result.returncode == 1
    assert result.stderr.startswith("webstack-pg-split: pg_restore "), result.stderr
    assert "already exists" in result.stderr
    every = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert pg.psql(every, target).strip() == "0"

    pg.psql("DROP SEQUENCE order_items_id_seq", target)
    again = split(pg, shared, target, role, "orders", "order_items")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["tables"] == {"order_items": [14, 14], "orders": [7, 7]}


def test_a_half_copied_target_is_refused(pg: PostgresServer, shared: str) -> None:
    role, target, _ = service_database(pg, "t3orders")
    pg.psql(f"SET ROLE {role}; CREATE TABLE orders (id serial PRIMARY KEY)", target)
    result = split(pg, shared, target, role, "orders", "order_items")
    assert result.returncode == 1
    assert "holds some of ['order_items', 'orders'] only (['orders'])" in result.stderr


def test_a_domain_the_shared_database_never_held_is_left_to_the_migrations(
    pg: PostgresServer,
) -> None:
    old = pg.create_database()  # the seed-000 app alone: items and notes only
    assert run_module("app.migrate", clean_env(**pg.env(old))).returncode == 0
    role, target, _ = service_database(pg, "t4pay")
    result = split(pg, old, target, role, "payments")
    assert result.returncode == 3
    assert json.loads(result.stdout) == {"action": "absent", "tables": {}}


# The check roles/postgresql runs before it creates the services' own databases (its
# tasks/app_database.yml): what it decides, and the query that finds the rows it decides on.
postgresql = load("postgresql", "postgresql")
SITE = load("webstack", "topology").webstack_topology(
    SERVICES, {"app": ["a1"]}, {"workers": 1, "db_pool_size": 1, "db_max_overflow": 0}
)
SEED_001_DATABASES = ["appdb", "user_db", "order_db", "payment_db"]


@pytest.mark.parametrize(
    ("existing", "migrated", "filled", "copied", "stranded"),
    [
        # A new site: no shared database, nothing to leave behind.
        ([], [], {}, {}, []),
        # Deployed by a release before this change: every service's rows in appdb only.
        (
            ["appdb"],
            [],
            {"users": ["users"], "orders": ["order_items", "orders"], "payments": []},
            {},
            [("users", ["users"]), ("orders", ["order_items", "orders"])],
        ),
        # Their databases created, never migrated (e.g. a run that stopped halfway).
        (SEED_001_DATABASES, ["appdb"], {"users": ["users"]}, {}, [("users", ["users"])]),
        # ... or with empty tables in them: no copy either.
        (
            SEED_001_DATABASES,
            ["appdb"],
            {"users": ["users"]},
            {"users": []},
            [("users", ["users"])],
        ),
        # Copied by playbooks/split-databases.yml, its site.yml to migrate them next.
        (SEED_001_DATABASES, ["appdb"], {"users": ["users"]}, {"users": ["users"]}, []),
        # Split, or new: each service's own database migrated; appdb's leftovers are old.
        (
            SEED_001_DATABASES,
            SEED_001_DATABASES,
            {"users": ["users"], "orders": ["orders"]},
            {},
            [],
        ),
        # The shared database holds the tables, empty: nothing to move.
        (["appdb"], [], {}, {}, []),
    ],
)
def test_the_check_stops_the_services_whose_rows_only_the_shared_database_holds(
    existing: list[str],
    migrated: list[str],
    filled: dict[str, list[str]],
    copied: dict[str, list[str]],
    stranded: list[tuple[str, list[str]]],
) -> None:
    found = postgresql.postgresql_stranded(SITE, "appdb", existing, migrated, filled, copied)
    assert [(s["name"], s["tables"]) for s in found] == stranded


def test_the_app_service_keeping_the_shared_database_is_never_stopped() -> None:
    found = postgresql.postgresql_stranded(SITE, "appdb", ["appdb"], [], {"app": ["items"]}, {})
    assert found == []


def test_the_tables_each_query_found_by_service_skipped_ones_left_out() -> None:
    results = [
        {"service": {"name": "users"}, "query_result": [{"tablename": "users"}]},
        {"service": {"name": "orders"}, "query_result": []},
        {"service": {"name": "payments"}, "skipped": True},
    ]
    assert postgresql.postgresql_tables_by_service(results) == {"users": ["users"], "orders": []}


def rows_query(tables: list[str]) -> str:
    """The check's query for the tables with rows, as community.postgresql sends it."""
    path = REPO_ROOT / "roles/postgresql/tasks/app_database.yml"
    tasks = yaml.safe_load(path.read_text())
    (task,) = (
        t for check in tasks for t in check.get("block", []) if "rows in the shared" in t["name"]
    )
    module = task["community.postgresql.postgresql_query"]
    # The names go joined, as text: the module would send a list as the text of its Python
    # form ({'users'}), which PostgreSQL reads as one name with quotes in it.
    assert module["named_args"]["tables"].replace(" ", "").endswith("|join(',')}}")
    joined = "'" + ",".join(tables) + "'"
    return module["query"].replace("%(tables)s", joined).replace("%%", "%")


def test_the_check_finds_the_tables_with_rows_in_the_shared_database(
    pg: PostgresServer, shared: str
) -> None:
    pg.psql("DELETE FROM payments", shared)
    found = pg.psql(rows_query(["users", "payments", "orders", "order_items", "nope"]), shared)
    assert sorted(found.split()) == ["order_items", "orders", "users"]


def test_empty_tables_in_the_target_are_not_taken_for_a_copy(
    pg: PostgresServer, shared: str
) -> None:
    # site.yml before the split: the service's migrations made its tables, empty.
    role, target, password = service_database(pg, "t5users")
    env = service_env(pg, role, password, target, "users")
    assert run_module("app.migrate", env).returncode == 0
    result = split(pg, shared, target, role, "users")
    assert result.returncode == 1
    assert f"{target} holds ['users'] without a row while {shared} holds their rows" in (
        result.stderr
    )
    assert pg.psql("SELECT count(*) FROM users", target).strip() == "0"
