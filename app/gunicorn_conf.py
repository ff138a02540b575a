"""Gunicorn settings for the app: ``gunicorn -c app/gunicorn_conf.py app.main:app``.

Every value comes from the environment (names and defaults in ``app/README.md``). With
``APP_ENV_FILES`` set (a deployed service: the settings files, ``:`` between them), the
files are read into the environment first, here, each time Gunicorn executes this file:
on start and on every reload (SIGHUP). Workers forked after a reload inherit the new
settings; what the files no longer name is gone (see ``app/core/settings.py``).

* ``APP_BIND``: where to listen, default ``unix:/run/webstack/app.sock``. Systemd socket
  activation (``LISTEN_FDS``) takes precedence when present.
* ``APP_WORKERS``: worker processes, default 2 (``UVICORN_WORKERS``, the seed's name, and
  ``WEB_CONCURRENCY`` are read when it is unset).
* ``APP_SOCKET_UMASK``: default ``0o117``, so the socket is ``srw-rw----``: the app's user
  and group only (Gunicorn's default umask 0 would make it world-connectable). Give nginx
  access through the group of the socket's directory, not through "other".
* ``APP_TIMEOUT`` (60), ``APP_GRACEFUL_TIMEOUT`` (30; the unit's ``TimeoutStopSec`` must be
  longer), ``APP_KEEPALIVE`` (75; keep nginx's upstream ``keepalive_timeout`` below it),
  ``APP_MAX_REQUESTS`` (100000) and ``APP_MAX_REQUESTS_JITTER`` (10000), ``APP_LOG_LEVEL``
  (``info``; ``UVICORN_LOG_LEVEL`` is read when it is unset).

Worker: ``app.worker.UvicornWorker``, uvicorn-worker's class on the asyncio loop, accepting
connections 32 at a time so two busy workers share them evenly, with a shutdown that
answers requests accepted just before a reload instead of closing their connections.
``APP_CONTROL_SOCKET`` enables Gunicorn's control socket at that path (off by default).

Client addresses: nginx reaches the app over a Unix socket, whose peer has no IP, or from
another host over TCP. The proxy headers are believed from the Unix socket (its mode lets
nobody but nginx connect) and from the addresses in ``APP_FORWARDED_ALLOW_IPS`` (comma
separated addresses or networks: the proxies on other hosts; default none), never from
another peer (see ``app/worker.py``). The *first* ``X-Forwarded-For`` entry is taken, so
nginx must overwrite the header (``$remote_addr``) rather than append to what the client
sent (``$proxy_add_x_forwarded_for``).

Logs: the access log (``APP_ACCESS_LOG``, on by default) goes to stdout and everything
else to stderr, for journald.

Metrics: the workers share their Prometheus counters through files in
``PROMETHEUS_MULTIPROC_DIR`` (see ``app/core/metrics.py``). The master empties that
directory when it starts (not on a reload: the counters go on across it), creating it if
need be; unset, it makes a private temporary one and removes it on exit. A worker that
exits has its live gauges dropped. Two services must never share the directory.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def _forget_app_modules() -> None:
    """Workers must import the app's code themselves, so a reload after a deploy runs the
    new code; nothing of ``app`` may stay cached in the master."""
    for name in [name for name in sys.modules if name == "app" or name.startswith("app.")]:
        del sys.modules[name]


def _apply_settings_files() -> None:
    """The settings files into the environment, with the release in service's own code.

    A file that cannot be read leaves the environment as it was, with a line saying so: a
    start then stops at the settings check (``on_starting``), a reload keeps the settings
    the workers had rather than stopping the master.
    """
    if not os.environ.get("APP_ENV_FILES"):
        return
    importlib.invalidate_caches()  # `current` may name another release since the last load
    try:
        from app.core.settings import SettingsError, apply_env_files, env_files_from_environment

        try:
            apply_env_files(env_files_from_environment())
        except SettingsError as exc:
            print(f"app: {exc}; the settings stay as they were", file=sys.stderr, flush=True)
    finally:
        _forget_app_modules()


_apply_settings_files()


def _env(name: str, default: str, *fallbacks: str) -> str:
    for key in (name, *fallbacks):
        value = os.environ.get(key, "").strip()
        if value:
            return value
    return default


bind = [_env("APP_BIND", "unix:/run/webstack/app.sock")]
workers = int(_env("APP_WORKERS", "2", "UVICORN_WORKERS", "WEB_CONCURRENCY"))
worker_class = "app.worker.UvicornWorker"
umask = int(_env("APP_SOCKET_UMASK", "0o117"), 0)

timeout = int(_env("APP_TIMEOUT", "60"))
graceful_timeout = int(_env("APP_GRACEFUL_TIMEOUT", "30"))
keepalive = int(_env("APP_KEEPALIVE", "75"))
# Recycle workers now and then (bounding any slow leak), not all at the same moment. A
# restart costs a worker a second or two of imports, so at thousands of requests a second
# the period stays in minutes.
max_requests = int(_env("APP_MAX_REQUESTS", "100000"))
max_requests_jitter = int(_env("APP_MAX_REQUESTS_JITTER", "10000"))

# Unix socket peers are always believed (app/worker.py); TCP peers only when listed here.
forwarded_allow_ips = _env("APP_FORWARDED_ALLOW_IPS", "")

# Gunicorn's control socket (for `gunicornc`) would default to $HOME/.gunicorn/; the unit
# needs only signals (HUP reloads, TERM stops), so it is off unless a path is given.
_control_socket = _env("APP_CONTROL_SOCKET", "")
if _control_socket:
    control_socket = _control_socket
else:
    control_socket_disable = True

# Gunicorn's line per request (to stdout), unless APP_ACCESS_LOG is false: behind nginx,
# whose access log has every request once with the client's address, the second line
# only doubles journald's work (docs/benchmarks.md).
_access_log = _env("APP_ACCESS_LOG", "true").lower()
if _access_log not in ("true", "false"):
    raise SystemExit(f"APP_ACCESS_LOG must be true or false, not {_access_log!r}")
accesslog = "-" if _access_log == "true" else None
errorlog = "-"
loglevel = _env("APP_LOG_LEVEL", "info", "UVICORN_LOG_LEVEL").lower()
proc_name = "webstack-app"
# Each worker imports the app itself: nothing (pools, exporter threads) crosses a fork.
preload_app = False


PRELOADED_LIBRARIES = (
    "anyio",
    "asyncpg",
    "fastapi",
    "httpx",
    "jwt",
    "opentelemetry.instrumentation.fastapi",
    "opentelemetry.instrumentation.redis",
    "opentelemetry.instrumentation.sqlalchemy",
    "opentelemetry.sdk.trace",
    "prometheus_client",  # after PROMETHEUS_MULTIPROC_DIR is set: it is read at import
    "pwdlib",
    "pydantic_settings",
    "redis.asyncio",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "sqlalchemy.ext.asyncio",
)


def on_starting(server: Any) -> None:
    """Refuse to start, with one line naming every bad setting, before any worker forks."""
    from app.core.settings import SettingsError, load_settings

    try:
        load_settings()
    except SettingsError as exc:
        print(f"app: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        _forget_app_modules()
    _prepare_metrics_directory(server)
    _preload_libraries()


def _prepare_metrics_directory(server: Any) -> None:
    """Give the workers an empty directory for their metric files, before any fork."""
    path = os.environ.get(METRICS_DIR_VARIABLE, "").strip()
    if not path:
        path = tempfile.mkdtemp(prefix="webstack-metrics-")
        os.environ[METRICS_DIR_VARIABLE] = path
        server.webstack_metrics_tmpdir = path
    directory = Path(path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Files of a previous run would be summed with this one's (and hold dead workers'
    # gauges); the directory itself may belong to systemd (RuntimeDirectory=) and stays.
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its in-progress gauge must not be summed any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    tmpdir = getattr(server, "webstack_metrics_tmpdir", None)
    if tmpdir:
        shutil.rmtree(tmpdir, ignore_errors=True)


def on_reload(server: Any) -> None:
    _forget_app_modules()
    # A new release may sit behind the same import path (the `current` link): forget what the
    # import system remembers of the directories it saw.
    importlib.invalidate_caches()


def _preload_libraries() -> None:
    """Import the libraries (not the app) once in the master.

    On a reload Gunicorn stops the old workers as soon as the new ones are forked, and no
    worker accepts until a new one has started: forked with the libraries already loaded,
    it starts in a fraction of the time. Nothing imported here opens a socket or starts a
    thread (the gRPC exporter is imported in the worker). The price: upgrading a library
    needs a restart; new app code needs only a reload.
    """
    for name in PRELOADED_LIBRARIES:
        importlib.import_module(name)


def post_fork(server: Any, worker: Any) -> None:
    """The app's own log lines go where Gunicorn's error log goes (stderr)."""
    app_logger = logging.getLogger("app")
    app_logger.handlers = list(server.log.error_log.handlers)
    app_logger.setLevel(server.log.error_log.level)
    app_logger.propagate = False
