"""Fixtures of the cluster checks: every host by name, and what the side effect recorded."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import testinfra

APP_HOSTS = ("app1", "app2", "app3")
SERVICES = ("app", "users", "orders", "payments")


@pytest.fixture(scope="session")
def hosts() -> dict[str, Any]:
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    names = ("proxy1", *APP_HOSTS, "db1", "cache1")
    return {
        name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")
        for name in names
    }


@pytest.fixture(scope="session")
def recorded() -> Path:
    """The molecule scenario's ephemeral directory, where the side effect left its records."""
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def address(host: Any) -> str:
    return host.ansible.get_variables()["ansible_host"]


def service_requests(host: Any, service: str) -> float:
    """Requests the service on this host has answered since it started (its own metrics,
    at its prefix: /metrics for the root service, /users/metrics for users)."""
    path = "/metrics" if service == "app" else f"/{service}/metrics"
    with host.sudo():
        metrics = host.check_output(
            f"curl -sf --unix-socket /run/webstack/{service}.sock http://localhost{path}"
        )
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("http_requests_total{")
    )


def recap(log: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP of an ansible-playbook run: host -> {ok, changed, failed, ...}."""
    result = {}
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # in case colours were forced
    for match in re.finditer(r"^(\S+)\s+: ((?:\w+=\d+\s*)+)$", log, re.MULTILINE):
        counts = dict(part.split("=") for part in match.group(2).split())
        result[match.group(1)] = {key: int(value) for key, value in counts.items()}
    return result


def load_json(path: Path) -> Any:
    assert path.exists(), f"{path} missing: run `molecule side-effect -s cluster` first"
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def secret():
    """A secret of this scenario, read the way the inventory reads it (generated on the
    controller, in the directory group_vars/all/testbed.yml names)."""
    testbed = Path(os.environ.get("WEBSTACK_TESTBED_DIR", "/var/lib/webstack-testbed"))
    secrets = testbed / "secrets-cluster"

    def read(name: str) -> str:
        return (secrets / name).read_text().split()[0]

    return read


@pytest.fixture(scope="session")
def db_password(secret):
    """A service's database password, from the file the sandbox inventory generates for it
    (inventories/sandbox/group_vars/all/main.yml): the app service's role, appuser, keeps
    the file it had before each service had its own."""

    def read(service: str) -> str:
        return secret("postgresql_app_password" if service == "app" else f"db_password_{service}")

    return read
