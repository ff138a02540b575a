"""PostgreSQL 18: running, reachable by the app user only, with its password only; a unit
that restarts itself and runs hardened; configuration changes PostgreSQL checks first."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time

import pytest
from conftest import assert_units_active

from tests.hosts import assert_sandboxed

UNIT = "postgresql@18-main.service"


def psql_tcp(host, user: str, password: str, sql: str = "SELECT 1", db: str = "appdb"):
    env = f"PGPASSWORD={shlex.quote(password)} PGCONNECT_TIMEOUT=5"
    return host.run(f"{env} psql -h 127.0.0.1 -U {user} -d {db} -XAtc {shlex.quote(sql)}")


def test_unit_enabled_and_active(host):
    assert_units_active(host, UNIT)


def test_server_is_version_18(host):
    with host.sudo("postgres"):
        version = host.check_output("psql -XAtc 'SHOW server_version_num'")
    assert version.startswith("18")


def test_app_user_logs_in_over_tcp(host, db_password):
    result = psql_tcp(host, "appuser", db_password("app"), "SELECT current_user")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "appuser"


def test_app_user_can_create_tables(host, db_password):
    sql = "CREATE TABLE verify_probe (id int); DROP TABLE verify_probe; SELECT 'ok'"
    result = psql_tcp(host, "appuser", db_password("app"), sql)
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


# --- the unit (issue 17): restarts itself, runs hardened ------------------------------------


def postmaster_started(host) -> str:
    with host.sudo("postgres"):
        return host.check_output("psql -XAtc 'SELECT pg_postmaster_start_time()'")


def test_unit_is_hardened(host):
    assert_sandboxed(host, UNIT)


def test_unit_restarts_after_a_crash(host):
    restarts = int(host.check_output(f"systemctl show --property NRestarts --value {UNIT}"))
    with host.sudo():
        host.check_output(f"kill -KILL $(systemctl show --property MainPID --value {UNIT})")
    killed = time.monotonic()
    deadline = killed + 30
    with host.sudo("postgres"):
        while host.run("psql -XAtc 'SELECT 1'").rc != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not come back within 30 s"
            time.sleep(0.2)
    print(f"PostgreSQL answered again {time.monotonic() - killed:.1f} s after SIGKILL")
    assert int(host.check_output(f"systemctl show --property NRestarts --value {UNIT}")) > restarts


# --- configuration changes that cannot take it down (issue 12) ------------------------------

SETTINGS_FILE = "/etc/postgresql/18/main/conf.d/60-webstack.conf"
HBA_FILE = "/etc/postgresql/18/main/pg_hba.conf"


def deploy(host, extra_vars: dict) -> subprocess.CompletedProcess[str]:
    """ansible-playbook playbooks/postgresql.yml on this host, as an operator runs it."""
    argv = [
        shutil.which("ansible-playbook") or "ansible-playbook",
        f"--inventory={os.environ['MOLECULE_INVENTORY_FILE']}",
        f"--limit={host.backend.host}",
        f"--extra-vars={json.dumps(extra_vars)}",
        "playbooks/postgresql.yml",
    ]
    result = subprocess.run(
        argv,
        cwd=os.environ["MOLECULE_PROJECT_DIRECTORY"],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )
    # Ansible prints a failure's message on stderr or stdout, depending on the callback.
    result.stdout += result.stderr
    print(result.stdout[-3000:])
    return result


def live_state(host) -> tuple[str, str, str]:
    with host.sudo():
        return (
            postmaster_started(host),
            host.file(SETTINGS_FILE).sha256sum,
            host.file(HBA_FILE).sha256sum,
        )


def test_an_invalid_setting_fails_the_play_and_changes_nothing(host, db_password):
    before = live_state(host)
    result = deploy(host, {"postgresql_extra_settings": {"work_mem": "4XB"}})
    assert result.returncode != 0
    assert 'invalid value for parameter "work_mem": "4XB"' in result.stdout
    assert "Change postgresql_extra_settings.work_mem" in result.stdout
    assert live_state(host) == before, "the live file or the server changed"
    sql = "SELECT current_setting('work_mem')"
    assert psql_tcp(host, "appuser", db_password("app"), sql).rc == 0


def test_a_bad_hba_line_fails_the_play_and_changes_nothing(host, db_password):
    before = live_state(host)
    bad = "host all all 10.0.0.0/33 scram-sha-256"
    result = deploy(host, {"postgresql_hba_extra_rules": [bad]})
    assert result.returncode != 0
    assert 'invalid CIDR mask in address "10.0.0.0/33"' in result.stdout
    assert live_state(host) == before, "the live file or the server changed"
    assert psql_tcp(host, "appuser", db_password("app")).rc == 0


def current(host, name: str) -> str:
    with host.sudo("postgres"):
        return host.check_output(f"psql -XAtc 'SHOW {name}'")


def test_only_settings_of_context_postmaster_restart_and_the_play_names_them(host):
    work_mem = current(host, "work_mem")
    started = postmaster_started(host)
    # work_mem takes a reload, max_files_per_process a restart.
    changed = {"work_mem": "7MB" if work_mem != "7MB" else "9MB", "max_files_per_process": 1234}
    result = deploy(host, {"postgresql_extra_settings": changed})
    assert result.returncode == 0, result.stdout
    assert f"Restarting {UNIT} for max_files_per_process" in result.stdout
    assert current(host, "work_mem") == changed["work_mem"]
    assert current(host, "max_files_per_process") == "1234"
    assert postmaster_started(host) != started

    # Back to the inventory's settings: the same single restart, for the same reason.
    result = deploy(host, {})
    assert result.returncode == 0, result.stdout
    assert f"Restarting {UNIT} for max_files_per_process" in result.stdout
    assert current(host, "work_mem") == work_mem
