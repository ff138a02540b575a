"""Shared fixtures for the testinfra checks that run against the Molecule hosts."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def in_container(host) -> bool:
    """True on a container sharing its kernel with the machine that runs it."""
    return host.run("systemd-detect-virt --container").rc == 0
