"""PostgreSQL 18: running, reachable by the app user only, with its password only."""

from __future__ import annotations

import shlex

import pytest

UNIT = "postgresql@18-main.service"


def psql_tcp(host, user: str, password: str, sql: str = "SELECT 1", db: str = "appdb"):
    env = f"PGPASSWORD={shlex.quote(password)} PGCONNECT_TIMEOUT=5"
    return host.run(f"{env} psql -h 127.0.0.1 -U {user} -d {db} -XAtc {shlex.quote(sql)}")


def test_unit_enabled_and_active(host):
    service = host.service(UNIT)
    assert service.is_enabled
    assert service.is_running


def test_server_is_version_18(host):
    with host.sudo("postgres"):
        version = host.check_output("psql -XAtc 'SHOW server_version_num'")
    assert version.startswith("18")


def test_app_user_logs_in_over_tcp(host, secret):
    result = psql_tcp(host, "appuser", secret("postgresql_app_password"), "SELECT current_user")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "appuser"


def test_app_user_can_create_tables(host, secret):
    sql = "CREATE TABLE verify_probe (id int); DROP TABLE verify_probe; SELECT 'ok'"
    result = psql_tcp(host, "appuser", secret("postgresql_app_password"), sql)
    assert result.rc == 0, result.stderr


def test_wrong_password_refused(host):
    result = psql_tcp(host, "appuser", "not-the-password")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


@pytest.fixture
def unlisted_role(host):
    with host.sudo("postgres"):
        host.check_output("psql -Xc \"CREATE ROLE intruder LOGIN PASSWORD 'intruder-pass'\"")
    yield "intruder"
    with host.sudo("postgres"):
        host.check_output("psql -Xc 'DROP ROLE intruder'")


def test_unlisted_user_refused_even_with_its_password(host, unlisted_role):
    result = psql_tcp(host, unlisted_role, "intruder-pass")
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr


def test_superuser_refused_over_tcp(host):
    result = psql_tcp(host, "postgres", "anything", db="postgres")
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr


def test_settings_sized_and_scram(host):
    with host.sudo("postgres"):
        rows = host.check_output(
            "psql -XAtc \"SELECT name || '=' || setting FROM pg_settings WHERE name IN "
            "('password_encryption', 'max_connections', 'listen_addresses')\""
        ).splitlines()
    settings = dict(row.split("=", 1) for row in rows)
    assert settings["password_encryption"] == "scram-sha-256"
    assert int(settings["max_connections"]) >= 100
    assert settings["listen_addresses"] == "localhost"
