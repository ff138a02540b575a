"""Real PostgreSQL, Valkey (or Redis) and Gunicorn servers in a temporary directory, for the
tests (tests/) and the benchmarks (bench/) alike.

The databases are started from the system's binaries (Debian: ``apt-get install postgresql
redis-server``, or ``valkey-server`` where it is packaged) on free loopback ports, and
removed with their directory on :meth:`stop`. PostgreSQL refuses to run as root, so when
the euid is 0 its processes run as the ``postgres`` system user, which owns the directory.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not become ready in {timeout}s\n{tail}")


def postgres_bindir() -> Path:
    """The newest PostgreSQL server binaries installed."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(Path(path).parent.parent.name),
        reverse=True,
    )
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")


class PostgresServer:
    """A throw-away cluster: superuser ``postgres`` over the Unix socket, ``app`` over TCP."""

    def __init__(self, user: str = "app", database: str = "appdb") -> None:
        self.user = user
        self.database = database
        self.password = secrets.token_hex(16)
        self.host = "127.0.0.1"
        self.port = 0
        self.bindir = postgres_bindir()
        self.dir = Path()
        self.process: subprocess.Popen[bytes] | None = None
        self._as_postgres: dict[str, Any] = {}

    def _run(self, *args: str) -> str:
        result = subprocess.run(
            args,
            check=False,
            capture_output=True,
            text=True,
            cwd=self.dir,
            **self._as_postgres,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")
        return result.stdout

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-tA",
            "-c",
            sql,
        )

    def start(self) -> PostgresServer:
        self.dir = Path(tempfile.mkdtemp(prefix="webstack-pg-"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._as_postgres = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        data = self.dir / "data"
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        for _attempt in range(5):
            self.port = free_port()
            try:
                self._launch()
                break
            except RuntimeError:
                if self.process is not None and self.process.poll() is None:
                    raise
                # Lost the race for the port to another process: try another one.
        else:
            log = self.dir / "postgres.log"
            raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text(errors='replace')}")
        self.psql(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
        self.create_database(self.database)
        return self

    def _launch(self) -> None:
        """Start the server on ``self.port`` and the data directory, and wait until ready."""
        log = self.dir / "postgres.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.dir / "data"),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.dir),
                    "-c",
                    f"listen_addresses={self.host}",
                    # A test cluster: durability is not the point, speed is.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                **self._as_postgres,
            )
        _wait(self._ready, 30, "PostgreSQL", log)

    def halt(self, how: signal.Signals = signal.SIGINT) -> None:
        """Stop the server, keeping its data and port for :meth:`restart`.

        ``SIGINT`` is a fast shutdown (sessions are told "terminating connection due to
        administrator command"), ``SIGQUIT`` an immediate one; ``SIGKILL`` kills every
        process of the server at once, as a crash or the OOM killer would.
        """
        assert self.process is not None
        if how == signal.SIGKILL:
            os.killpg(self.process.pid, signal.SIGKILL)  # the backends too
        else:
            self.process.send_signal(how)
        self.process.wait(timeout=30)

    def restart(self) -> None:
        """Start a halted server again, on the same port and data; waits until ready."""
        assert self.process is not None and self.process.poll() is not None
        for _attempt in range(50):
            try:
                self._launch()
                return
            except RuntimeError:
                # Killed backends may still be going away, holding the shared memory.
                if self.process.poll() is None:
                    raise
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start again")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError("PostgreSQL exited")
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", str(self.dir), "-p", str(self.port)],
            check=False,
        )
        return result.returncode == 0

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database owned by the app user (a fresh name unless given)."""
        name = name or f"t_{secrets.token_hex(6)}"
        self.psql(f'CREATE DATABASE "{name}" OWNER {self.user}')
        return name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.dir != Path():
            shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, database: str | None = None) -> dict[str, str]:
        """The ``APP_DB_*`` variables that reach this server."""
        return {
            "APP_DB_USER": self.user,
            "APP_DB_PASS": self.password,
            "APP_DB_HOST": self.host,
            "APP_DB_PORT": str(self.port),
            "APP_DB_NAME": database or self.database,
        }


def cache_server_binary() -> str:
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "neither valkey-server nor redis-server found: apt-get install redis-server"
        )
    return found


class CacheServer:
    """A Valkey/Redis server with a password, no persistence, on a free port."""

    def __init__(self) -> None:
        self.password = secrets.token_hex(16)
        self.host = "127.0.0.1"
        self.port = 0
        self.binary = cache_server_binary()
        self.dir = Path()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CacheServer:
        if self.dir == Path():
            self.dir = Path(tempfile.mkdtemp(prefix="webstack-cache-"))
        config = self.dir / "server.conf"
        log = self.dir / "server.log"
        for _attempt in range(5):
            if not self.port or _attempt:
                self.port = free_port()
            config.write_text(
                f"bind {self.host}\nport {self.port}\nrequirepass {self.password}\n"
                f'dir {self.dir}\nsave ""\nappendonly no\ndaemonize no\n'
            )
            config.chmod(0o600)
            with log.open("ab") as out:
                self.process = subprocess.Popen(
                    [self.binary, str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                _wait(self._ready, 15, "cache server", log)
                return self
            except RuntimeError:
                if self.process.poll() is None:
                    raise
        raise RuntimeError(f"cache server did not start:\n{log.read_text(errors='replace')}")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError("cache server exited")
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while b"PONG" not in reply and len(reply) < 200:
                    chunk = sock.recv(200)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
        except OSError:
            return False

    def flush(self, db: int = 0) -> None:
        """Empty one database of the cache server."""
        import redis

        with redis.Redis(host=self.host, port=self.port, password=self.password, db=db) as client:
            client.flushdb()

    def pause(self) -> None:
        """Freeze the server: connections are accepted by the kernel, never answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, remove: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if remove and self.dir != Path():
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = Path()

    def env(self, db: int = 0) -> dict[str, str]:
        """The ``APP_CACHE_*`` variables that reach this server."""
        return {
            "APP_CACHE_HOST": self.host,
            "APP_CACHE_PORT": str(self.port),
            "APP_CACHE_PASS": self.password,
            "APP_CACHE_DB": str(db),
        }


REPO_ROOT = Path(__file__).resolve().parent


def _role_filter(role: str, plugin: str, name: str) -> Any:
    path = REPO_ROOT / "roles" / role / "filter_plugins" / f"{plugin}.py"
    spec = importlib.util.spec_from_file_location(f"{role}_{plugin}_plugin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


# How roles/app writes a value into a settings file (its filter plugin, imported as it is).
app_env_value = _role_filter("app", "app_settings", "app_env_value")


def settings_file(values: dict[str, str]) -> str:
    """A settings file as roles/app writes it."""
    return "".join(f"{name}={app_env_value(value, name)}\n" for name, value in values.items())


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``APP_*`` variable, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("APP_")}
    env.update(extra)
    return env


class GunicornServer:
    """``gunicorn -c app/gunicorn_conf.py TARGET`` on a Unix socket in a temporary directory."""

    def __init__(self, env: dict[str, str], target: str = "app.main:app", workers: int = 2) -> None:
        # A short path: Unix socket paths are limited to about 100 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="gunicorn-"))
        self.socket = self.dir / "app.sock"
        self.target = target
        self.workers = workers
        self.env = {**env, "APP_BIND": f"unix:{self.socket}", "APP_WORKERS": str(workers)}
        self.stdout = self.dir / "stdout.log"
        self.stderr = self.dir / "stderr.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", "app/gunicorn_conf.py", self.target]

    def start(self) -> GunicornServer:
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            # Its own session, so cleanup() can kill the workers too: killed alone, the
            # master would leave them running, orphaned, on a deleted socket.
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.wait_for_workers(self.workers)
        return self

    def wait_for_workers(self, count: int, timeout: float = 60) -> None:
        """Until ``count`` worker start-ups in all have been logged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.stderr.read_text()}")
            if self.stderr.read_text().count("Application startup complete") >= count:
                return
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn workers did not start:\n{self.stderr.read_text()}")

    def stop(self) -> int:
        """Graceful stop (SIGTERM); returns Gunicorn's exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def cleanup(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # master and workers alike
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_servers() -> Any:
    """A PostgreSQL and a cache server for the duration of a ``with`` block."""
    pg = PostgresServer()
    cache = CacheServer()
    try:
        pg.start()
        cache.start()
        yield pg, cache
    finally:
        cache.stop(remove=True)
        pg.stop()
