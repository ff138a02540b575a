"""Shared fixtures for the testinfra checks that run against the Molecule hosts."""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values

from tests.hosts import security_headers as declared_security_headers


@pytest.fixture(scope="session")
def security_headers() -> dict[str, str]:
    """The headers nginx adds to every answer (lower-case names), from roles/nginx."""
    return declared_security_headers()


def read_settings(host, path: str = "/etc/webstack/app.env") -> dict[str, str]:
    """A settings file of the app's, read as the app reads it (python-dotenv, nothing
    expanded: app/core/settings.py)."""
    with host.sudo():
        text = host.file(path).content_string
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {name: value for name, value in values.items() if value is not None}


def assert_units_active(host, *units: str) -> None:
    """Each unit enabled (starts at boot) and running now."""
    for unit in units:
        service = host.service(unit)
        assert service.is_enabled, f"{unit} is not enabled"
        assert service.is_running, f"{unit} is not running"


@pytest.fixture(scope="module")
def address(host) -> str:
    """The host's address on the test bed's bridge, as clients reach it."""
    return host.ansible.get_variables()["ansible_host"]


@pytest.fixture(scope="module")
def api(address):
    """A client of the gateway's plain-HTTP listener, :8080."""
    with httpx.Client(base_url=f"http://{address}:8080", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def in_container(host) -> bool:
    """True on a container sharing its kernel with the machine that runs it."""
    return host.run("systemd-detect-virt --container").rc == 0


def _secrets_dir() -> Path:
    return Path(os.environ.get("WEBSTACK_TESTBED_DIR", "/var/lib/webstack-testbed")) / "secrets"


@pytest.fixture(scope="session")
def secret():
    """Read a sandbox secret the way the inventory does (generated on the controller)."""

    def read(name: str) -> str:
        return (_secrets_dir() / name).read_text().split()[0]

    return read
