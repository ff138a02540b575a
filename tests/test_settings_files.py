"""Settings files: written by roles/app, read by the app itself, checked before use.

The role writes every value through its filter (roles/app/filter_plugins/app_settings.py);
the app reads the files with python-dotenv, literally (app/core/settings.py). Any value a
secret can hold must come back as it was, and the check the role runs before a file
replaces the live one (``python -m app.core.settings FILE... --each FILE...``) must refuse
what a service could not start with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from app.core.settings import ENV_FILES_VARIABLE, apply_env_files, main, read_env_files
from devservers import PostgresServer, app_env_value, clean_env, settings_file
from tests.test_startup import run_module

AWKWARD = [
    "it's",
    'say "hi"',
    "back\\slash and \\n and \\\\",
    "${HOME} and $USER and $(id)",
    "#not a comment",
    " spaced  out ",
    "ünïcødé €",
    "=starts with equals",
    "",
]

SHARED = {
    "APP_DB_HOST": "127.0.0.1",
    "APP_DB_PORT": "5432",
    "APP_DB_NAME": "appdb",
    "APP_DB_USER": "appuser",
    "APP_DB_PASS": 'it\'s a ${SECRET} "pass" \\ word',
    "APP_CACHE_HOST": "127.0.0.1",
    "APP_CACHE_PORT": "6379",
    "APP_CACHE_DB": "0",
    "APP_CACHE_PASS": "c'ache",
    "OTEL_SERVICE_NAME": "webstack",
}


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Applying settings files changes this process's environment: undo it after each."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("value", AWKWARD)
def test_any_value_a_secret_can_hold_comes_back_as_written(tmp_path: Path, value: str) -> None:
    path = tmp_path / "app.env"
    path.write_text(settings_file({"APP_DB_PASS": value, "APP_CACHE_PASS": "x"}))
    assert read_env_files([path]) == {"APP_DB_PASS": value, "APP_CACHE_PASS": "x"}


def test_the_role_refuses_what_no_settings_file_can_hold() -> None:
    for value in ("two\nlines", "carriage\rreturn", "nul\0"):
        with pytest.raises(AnsibleFilterError, match="app_db_password contains a line break"):
            app_env_value(value, "app_db_password")


def test_applying_files_replaces_the_settings_and_drops_what_they_no_longer_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, own = tmp_path / "app.env", tmp_path / "service-users.env"
    shared.write_text(settings_file({**SHARED, "APP_CACHE_TTL": "60"}))
    own.write_text(settings_file({"APP_DOMAINS": "users", "APP_CACHE_TTL": "30"}))
    monkeypatch.setenv(ENV_FILES_VARIABLE, f"{shared}:{own}")
    monkeypatch.setenv("APP_REMOVED_SINCE", "1")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("PATH_LIKE_UNRELATED", "kept")
    apply_env_files([shared, own])
    assert os.environ["APP_DB_PASS"] == SHARED["APP_DB_PASS"]
    assert os.environ["APP_CACHE_TTL"] == "30"  # the service's own file wins
    assert os.environ["OTEL_SERVICE_NAME"] == "webstack"
    assert "APP_REMOVED_SINCE" not in os.environ
    assert "OTEL_TRACES_SAMPLER" not in os.environ
    assert os.environ["PATH_LIKE_UNRELATED"] == "kept"
    assert os.environ[ENV_FILES_VARIABLE] == f"{shared}:{own}"


def test_the_check_accepts_good_files_and_names_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith(("APP_", "OTEL_"))]:
        monkeypatch.delenv(name)
    shared = tmp_path / "app.env"
    shared.write_text(settings_file(SHARED))
    users = tmp_path / "service-users.env"
    users.write_text(settings_file({"APP_DOMAINS": "users", "APP_ROOT_PATH": "/users"}))
    items = tmp_path / "service-app.env"
    items.write_text(settings_file({"APP_DOMAINS": "items,notes"}))

    assert main([str(shared), str(items)]) == 0
    assert "APP_DB_PASS=**********" in capsys.readouterr().out  # masked
    # users needs the token secret: the shared file is checked against each service's own.
    assert main([str(shared), "--each", str(items), str(users)]) == 2
    assert "missing required settings: APP_JWT_SECRET" in capsys.readouterr().err
    # A service file not written yet (a first deploy) is no reason to refuse.
    assert main([str(shared), "--each", str(items), str(tmp_path / "service-new.env")]) == 0
    capsys.readouterr()
    # A shared file without the secrets (each service's file has its own) and no service
    # file yet: only read; each service's file is checked with it when it is written.
    partial = tmp_path / "partial.env"
    partial.write_text(settings_file({"APP_DB_HOST": "db", "APP_DB_PORT": "5432"}))
    assert main([str(partial), "--each", str(tmp_path / "service-new.env")]) == 0
    assert main([str(partial)]) == 2
    capsys.readouterr()

    shared.write_text(settings_file({**SHARED, "APP_DB_PORT": "not a port"}))
    assert main([str(shared), str(items)]) == 2
    assert "invalid settings: APP_DB_PORT" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.env")]) == 2
    assert "cannot read settings file" in capsys.readouterr().err


def test_migrations_read_the_settings_files(pg: PostgresServer, tmp_path: Path) -> None:
    """roles/app runs `python -m app.migrate` with APP_ENV_FILES, not an environment."""
    shared = tmp_path / "app.env"
    shared.write_text(settings_file(pg.env(pg.create_database())))
    env = clean_env(**{ENV_FILES_VARIABLE: str(shared)})
    result = run_module("app.migrate", env)
    assert result.returncode == 0, result.stderr
    assert "Running upgrade" in result.stderr


def test_migrations_run_before_the_service_ever_started(pg: PostgresServer, tmp_path: Path) -> None:
    """A new service's first deploy migrates before its unit first starts: the metrics
    directory its settings name (under its RuntimeDirectory) is not there yet."""
    shared = tmp_path / "app.env"
    shared.write_text(settings_file(pg.env(pg.create_database())))
    own = tmp_path / "service-payments.env"
    own.write_text(
        settings_file(
            {
                "APP_DOMAINS": "payments",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "not-started" / "metrics"),
            }
        )
    )
    env = clean_env(**{ENV_FILES_VARIABLE: f"{shared}:{own}"})
    result = run_module("app.migrate", env)
    assert result.returncode == 0, result.stderr
    assert "Running upgrade" in result.stderr
    assert not (tmp_path / "not-started").exists()
