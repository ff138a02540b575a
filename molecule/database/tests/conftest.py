"""Fixtures of the database checks: hosts by inventory group, what the drills recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner


@pytest.fixture(scope="session")
def inventory() -> str:
    return os.environ["MOLECULE_INVENTORY_FILE"]


@pytest.fixture(scope="session")
def groups(inventory) -> dict[str, list[str]]:
    runner = AnsibleRunner(inventory)
    return {name: runner.get_hosts(name) for name in ("db", "etcd", "app", "backup")}


@pytest.fixture(scope="session")
def hosts(inventory, groups) -> dict[str, Any]:
    names = {name for members in groups.values() for name in members}
    return {
        name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")
        for name in sorted(names)
    }


@pytest.fixture(scope="session")
def recorded() -> Path:
    """The scenario's ephemeral directory, where the side effect left its records."""
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def load_json(path: Path) -> Any:
    assert path.exists(), f"{path} missing: run `molecule side-effect` first"
    return json.loads(path.read_text())


def cluster(host) -> list[dict[str, Any]]:
    """patronictl list, as JSON, asked on a db host."""
    with host.sudo():
        out = host.check_output("patronictl --config-file /etc/patroni/config.yml list -f json")
    return json.loads(out)


def primary_of(members: list[dict[str, Any]]) -> str:
    leaders = [m["Member"] for m in members if m["Role"] == "Leader"]
    assert len(leaders) == 1, members
    return leaders[0]
