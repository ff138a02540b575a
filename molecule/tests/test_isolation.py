"""Least privilege between the services (issue 17): each runs as its own account, reads
only its own secrets, and has its own PostgreSQL role and database, which no other
service's role can reach."""

from __future__ import annotations

import shlex

import pytest
from conftest import read_settings

# The sandbox's service map (inventories/sandbox), with what roles/webstack derives from it.
SERVICES = {
    # name: (database, role, secrets besides its database password)
    "app": ("appdb", "appuser", {"APP_CACHE_PASS"}),
    "users": ("user_db", "user_user", {"APP_CACHE_PASS", "APP_JWT_SECRET"}),
    "orders": ("order_db", "order_user", {"APP_JWT_SECRET"}),
    "payments": ("payment_db", "payment_user", {"APP_JWT_SECRET"}),
}
SECRETS = {"APP_DB_PASS", "APP_CACHE_PASS", "APP_JWT_SECRET"}
OTHERS = [(a, b) for a in SERVICES for b in SERVICES if a != b]


def psql(host, role: str, password: str, database: str, sql: str = "SELECT current_user"):
    env = f"PGPASSWORD={shlex.quote(password)} PGCONNECT_TIMEOUT=5"
    return host.run(f"{env} psql -h 127.0.0.1 -U {role} -d {database} -XAtc {shlex.quote(sql)}")


def as_postgres(host, sql: str, database: str = "postgres") -> str:
    with host.sudo("postgres"):
        return host.check_output(f"psql -d {database} -XAtc {shlex.quote(sql)}")


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_as_its_own_user(host, service):
    pid = host.check_output(f"systemctl show webstack-{service}.service -p MainPID --value")
    assert pid != "0"
    # The master and every worker.
    users = host.check_output(f"ps -o user= --pid {pid} --ppid {pid}").split()
    assert len(users) >= 2, users
    assert set(users) == {f"webstack-{service}"}


@pytest.mark.parametrize("service", SERVICES)
def test_each_settings_file_is_readable_by_its_service_only(host, service, db_password):
    path = f"/etc/webstack/service-{service}.env"
    with host.sudo():
        env = host.file(path)
        assert (env.user, env.group, env.mode) == ("root", f"webstack-{service}", 0o640)
    with host.sudo(f"webstack-{service}"):
        assert host.run(f"test -r {path}").rc == 0
    for other in SERVICES:
        if other != service:
            with host.sudo(f"webstack-{other}"):
                assert host.run(f"cat {path}").rc != 0, f"webstack-{other} read {path}"
    settings = read_settings(host, path)
    database, role, secrets = SERVICES[service]
    assert (settings["APP_DB_NAME"], settings["APP_DB_USER"]) == (database, role)
    assert settings["APP_DB_PASS"] == db_password(service)
    # The cache password and the token secret only where its domains use them.
    assert SECRETS & set(settings) == secrets | {"APP_DB_PASS"}


def test_the_shared_settings_file_holds_no_secret(host):
    settings = read_settings(host)
    assert not SECRETS & set(settings), "app.env holds a secret"
    with host.sudo():
        env = host.file("/etc/webstack/app.env")
        assert (env.user, env.group, env.mode) == ("root", "webstack", 0o640)


@pytest.mark.parametrize("service", SERVICES)
def test_each_role_reaches_its_own_database(host, service, db_password):
    database, role, _ = SERVICES[service]
    result = psql(host, role, db_password(service), database)
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == role
    owner = as_postgres(
        host, f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{database}'"
    )
    assert owner == role


@pytest.mark.parametrize(("service", "other"), OTHERS)
def test_no_role_reaches_another_services_database(host, service, other, db_password):
    _, role, _ = SERVICES[service]
    database = SERVICES[other][0]
    result = psql(host, role, db_password(service), database)
    assert result.rc != 0, f"{role} connected to {database}"
    assert "no pg_hba.conf entry" in result.stderr, result.stderr
    # Behind pg_hba.conf, the database itself refuses it too (CONNECT only for its owner).
    allowed = as_postgres(host, f"SELECT has_database_privilege('{role}', '{database}', 'CONNECT')")
    assert allowed == "f"


@pytest.mark.parametrize("service", SERVICES)
def test_each_database_holds_its_own_domains_tables_only(host, service):
    database = SERVICES[service][0]
    tables = set(
        as_postgres(
            host, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database
        ).split()
    )
    expected = {
        "app": {"items", "notes"},
        "users": {"users"},
        "orders": {"orders", "order_items"},
        "payments": {"payments"},
    }[service] | {"idempotency_keys", "alembic_version"}
    if service == "app":
        # A database shared before the split keeps the other tables until the operator
        # drops them (playbooks/split-databases.yml); they belong to appuser alone.
        assert expected <= tables
    else:
        assert tables == expected
