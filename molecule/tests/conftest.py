"""Shared fixtures for the testinfra checks that run against the Molecule hosts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
