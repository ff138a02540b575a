"""The roles' filter plugins as plain modules, for the tests of what they derive."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROLES = Path(__file__).resolve().parent.parent / "roles"

# The service map of a site serving both seeds: each service on its own prefix and port.
SERVICES = [
    {"name": "app", "domains": ["items", "notes"], "prefix": "", "port": 8000},
    {"name": "users", "domains": ["users"], "prefix": "/users", "port": 8001},
    {"name": "orders", "domains": ["orders"], "prefix": "/orders", "port": 8002},
    {"name": "payments", "domains": ["payments"], "prefix": "/payments", "port": 8003},
]


def load(role: str, plugin: str) -> Any:
    """roles/<role>/filter_plugins/<plugin>.py, imported under a name of its own."""
    path = ROLES / role / "filter_plugins" / f"{plugin}.py"
    spec = importlib.util.spec_from_file_location(f"{role}_{plugin}_plugin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
