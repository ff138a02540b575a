"""What the checks of the deployed hosts (molecule/*/tests) share: the roles' defaults they
compare against, and how a unit's sandbox is rated. Each scenario's conftest is its own
module, so what several of them need lives here (the project root is on pytest's path)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROLES = Path(__file__).resolve().parent.parent / "roles"
LOAD_TASKS = ROLES.parent / "molecule" / "resources" / "tasks" / "load.yml"

# The highest `systemd-analyze security` exposure a unit we ship or configure may have:
# the one issue 17 set ("OK" in systemd's words).
MAX_EXPOSURE = 4.0


def role_defaults(role: str) -> dict[str, Any]:
    """A role's defaults as the role declares them: tests compare against these rather
    than restating them (the scenarios leave them as they are unless a test says so)."""
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())


def security_headers() -> dict[str, str]:
    """The headers nginx adds to every answer (lower-case names), from roles/nginx."""
    headers = role_defaults("nginx")["nginx_security_headers"]
    return {name.lower(): str(value) for name, value in headers.items()}


def exposure(host, unit: str) -> float:
    """The unit's overall exposure as `systemd-analyze security` rates it, printed."""
    out = host.check_output(f"systemd-analyze security --no-pager {unit} | tail -n 1")
    found = re.search(r"level for \S+: ([0-9.]+)", out)
    assert found, f"no exposure level in: {out}"
    level = float(found.group(1))
    print(f"systemd-analyze security {unit}: {level}")
    return level


def assert_sandboxed(host, unit: str) -> None:
    level = exposure(host, unit)
    assert level <= MAX_EXPOSURE, f"{unit}: exposure {level} above {MAX_EXPOSURE}"


def load_tally(host) -> dict[str, Any]:
    """tools/loadgen's report of the last load window on host (a side effect's), from where
    molecule/resources/tasks/load.yml has it written."""
    path = yaml.safe_load(LOAD_TASKS.read_text())[0]["vars"]["load_tally"]
    tally = host.file(path)
    assert tally.exists, f"{path} missing: run `molecule side-effect` before verify"
    return json.loads(tally.content_string)
