"""The private API of uvicorn and uvicorn-worker that app/worker.py overrides is still there.

app/worker.py re-implements ``uvicorn_worker.UvicornWorker._serve`` and extends
``uvicorn.server.Server.shutdown``; pyproject.toml pins both packages to the versions it
was tested with. When a new version is tried, these tests say what moved, by name, before
a reload under load finds out.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from gunicorn.arbiter import Arbiter
from packaging.requirements import Requirement
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from app import worker

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _pinned(name: str) -> Requirement:
    for line in re.findall(r'^\s*"([^"]+)",', PYPROJECT.read_text(), flags=re.MULTILINE):
        requirement = Requirement(line)
        if requirement.name == name:
            return requirement
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


@pytest.mark.parametrize("name", ["uvicorn", "uvicorn-worker"])
def test_the_installed_version_is_the_pinned_one(name: str) -> None:
    requirement = _pinned(name)
    assert requirement.specifier, f"{name} has no upper bound: app/worker.py needs one"
    assert version(name) in requirement.specifier, (
        f"{name} {version(name)} is installed, outside the range app/worker.py was tested "
        f"with ({requirement.specifier}): run these tests and tests/test_gunicorn.py with it, "
        "then move the pin"
    )


def test_uvicorn_worker_serve_is_what_worker_replaces() -> None:
    """``_serve`` is re-implemented whole: its body must still be the one we copied."""
    serve = getattr(UvicornWorker, "_serve", None)
    assert serve is not None and inspect.iscoroutinefunction(serve), (
        "uvicorn_worker.UvicornWorker._serve is gone or no longer a coroutine: "
        "app/worker.py's UvicornWorker._serve would never run"
    )
    assert list(inspect.signature(serve).parameters) == ["self"], (
        "UvicornWorker._serve takes other arguments now: see app/worker.py"
    )
    source = inspect.getsource(serve)
    for step in (
        "self.config.app = self.wsgi",
        "Server(config=self.config)",
        "self._install_sigquit_handler()",
        "server.serve(sockets=self.sockets)",
        "server.started",
        "Arbiter.WORKER_BOOT_ERROR",
    ):
        assert step in source, (
            f"uvicorn_worker's UvicornWorker._serve no longer does {step!r}: "
            "app/worker.py re-implements it and must follow"
        )
    for name in ("_install_sigquit_handler", "CONFIG_KWARGS", "run", "init_process"):
        assert hasattr(UvicornWorker, name), f"uvicorn_worker.UvicornWorker.{name} is gone"
    assert hasattr(Arbiter, "WORKER_BOOT_ERROR")


def test_uvicorn_server_shutdown_is_what_worker_extends() -> None:
    parameters = inspect.signature(Server.shutdown).parameters
    assert list(parameters) == ["self", "sockets"], (
        f"uvicorn.server.Server.shutdown takes {list(parameters)} now, not (self, sockets): "
        "app/worker.py's _DrainingServer.shutdown overrides it"
    )
    assert inspect.iscoroutinefunction(Server.shutdown)
    # _DrainingServer closes the listeners itself first: they must still be there.
    assert "self.servers" in inspect.getsource(Server.shutdown), (
        "uvicorn.server.Server.shutdown no longer closes self.servers, which "
        "app/worker.py's _DrainingServer.shutdown closes first"
    )


def test_config_takes_what_worker_sets() -> None:
    config = Config(app=worker.TrustedProxyHeaders, **worker.UvicornWorker.CONFIG_KWARGS)
    assert config.loop == "asyncio"
    assert hasattr(config, "backlog"), "uvicorn.Config has no backlog: see ACCEPT_BATCH"
