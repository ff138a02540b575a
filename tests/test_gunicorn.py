"""The app as production runs it: Gunicorn with Uvicorn workers on a Unix socket."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devservers import (
    REPO_ROOT,
    CacheServer,
    GunicornServer,
    PostgresServer,
    clean_env,
    settings_file,
)
from tests.apps import until

CLIENT_IP = "203.0.113.7"


class Gunicorn(GunicornServer):
    def client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url="http://app.internal")


@pytest.fixture
def gunicorn(pg: PostgresServer, cache_server: CacheServer) -> Iterator[Gunicorn]:
    """Two workers starting at once on an empty database, tracing to stdout."""
    # A database of its own, and a cache database emptied of what other tests left there.
    env = clean_env(**pg.env(pg.create_database()), **cache_server.env(db=1))
    cache_server.flush(db=1)
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="gunicorn-test")
    server = Gunicorn(env, workers=2)
    try:
        yield server.start()
    finally:
        server.cleanup()


async def test_unix_socket_forwarded_client_ip_and_logs(gunicorn: Gunicorn) -> None:
    # Group-accessible only: Gunicorn's default umask would leave it world-connectable.
    assert stat.S_ISSOCK(os.stat(gunicorn.socket).st_mode)
    assert stat.S_IMODE(os.stat(gunicorn.socket).st_mode) == 0o660

    forwarded = {"X-Forwarded-For": CLIENT_IP, "X-Forwarded-Proto": "https"}
    async with gunicorn.client() as client:
        created = await client.post("/api/items", json={"name": "via gunicorn"}, headers=forwarded)
        assert created.status_code == 201, created.text
        fetched = await client.get("/api/items/1", headers=forwarded)
        assert fetched.json() == created.json()
        assert (await client.get("/health")).json()["status"] == "ok"

    assert gunicorn.stop() == 0  # a clean, graceful stop
    stdout = gunicorn.stdout.read_text()
    stderr = gunicorn.stderr.read_text()

    # The access log (stdout, for journald) names the client nginx forwarded...
    access = [line for line in stdout.splitlines() if "GET /api/items/1 HTTP/1.1" in line]
    assert len(access) == 1, stdout
    assert f"{CLIENT_IP}:0 - " in access[0]
    assert '" 200' in access[0]
    # ... and so does the app: its HTTP span records the client address it was given.
    assert re.search(rf'"(client\.address|net\.peer\.ip)": "{re.escape(CLIENT_IP)}"', stdout)
    assert '"service.name": "gunicorn-test"' in stdout
    assert '"http.target": "/health"' not in stdout and '"url.path": "/health"' not in stdout
    # Start-up and shutdown went to stderr, with the app's own start-up line per worker.
    assert stderr.count("started: domains=items,notes") == 2
    assert "Traceback" not in stderr
    assert "Control socket" not in stderr


async def test_reload_drops_no_request(gunicorn: Gunicorn) -> None:
    """SIGHUP (systemd's ExecReload) replaces the workers while requests keep flowing.

    Requests that arrive while no worker accepts wait in the socket's backlog, as they
    would behind nginx (proxy_read_timeout 30 s): slower, never refused or dropped.
    """
    assert gunicorn.process is not None
    statuses: list[int] = []
    latencies: list[float] = []
    stop = asyncio.Event()

    async def load() -> None:
        async with gunicorn.client() as client:
            while not stop.is_set():
                started = time.perf_counter()
                # One connection per request, as nginx opens them without upstream keepalive.
                response = await client.get(
                    "/api/items", headers={"Connection": "close"}, timeout=30
                )
                latencies.append(time.perf_counter() - started)
                statuses.append(response.status_code)

    async def answers(more: int) -> None:
        target = len(statuses) + more
        await until(lambda: len(statuses) >= target, 60, f"{target} answers")

    clients = [asyncio.create_task(load()) for _ in range(4)]
    await answers(20)
    # Plain uvicorn workers dropped a few requests in every few reloads; three catch that.
    for reload in range(1, 4):
        gunicorn.process.send_signal(signal.SIGHUP)
        await asyncio.to_thread(gunicorn.wait_for_workers, 2 * (reload + 1))
        await answers(20)
    stop.set()
    await asyncio.gather(*clients)
    print(f"{len(statuses)} requests over 3 reloads, slowest {max(latencies):.2f}s")
    assert len(statuses) >= 80
    assert set(statuses) == {200}
    assert gunicorn.stop() == 0


def listen_queue(socket_path: Path) -> int:
    """The accept queue's size of a listening Unix socket, as ``ss`` reports it."""
    out = subprocess.run(
        [shutil.which("ss") or "/usr/bin/ss", "-xlnH"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if str(socket_path) in fields:
            return int(fields[3])  # Netid State Recv-Q Send-Q: Send-Q is the queue's size
    raise AssertionError(f"{socket_path} is not listening:\n{out}")


async def test_workers_accept_in_batches_without_shrinking_the_queue(gunicorn: Gunicorn) -> None:
    """The worker hands asyncio a small accept batch (app/worker.py), which asyncio would
    also pass to listen(): the queue every worker shares must keep Gunicorn's size, also
    after a reload has started new workers, or nginx's connections get refused."""
    assert gunicorn.process is not None
    assert listen_queue(gunicorn.socket) == 2048
    gunicorn.process.send_signal(signal.SIGHUP)
    await asyncio.to_thread(gunicorn.wait_for_workers, 4)
    assert listen_queue(gunicorn.socket) == 2048
    # And the workers serve through their copies of the socket.
    async with gunicorn.client() as client:
        answers = await asyncio.gather(*(client.get("/health") for _ in range(50)))
    assert {answer.status_code for answer in answers} == {200}
    assert gunicorn.stop() == 0


def test_gunicorn_refuses_to_start_without_settings() -> None:
    server = Gunicorn(clean_env(APP_DB_HOST="db.internal"))
    try:
        with server.stdout.open("wb") as out, server.stderr.open("wb") as err:
            result = subprocess.run(
                server.command(),
                cwd=REPO_ROOT,
                env=server.env,
                stdout=out,
                stderr=err,
                timeout=60,
                check=False,
            )
        stderr = server.stderr.read_text()
        assert result.returncode == 2
        assert "Traceback" not in stderr
        assert (
            "app: missing required settings: APP_CACHE_DB, APP_CACHE_HOST, APP_CACHE_PASS, "
            "APP_CACHE_PORT, APP_DB_NAME, APP_DB_PASS, APP_DB_PORT, APP_DB_USER\n"
        ) in stderr
        assert not server.socket.exists()
    finally:
        server.cleanup()


async def test_settings_files_are_read_on_start_and_on_every_reload(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    """As roles/app deploys a service: its settings only in files (APP_ENV_FILES), written
    by the role's quoting; a changed file reaches the workers of a reload."""
    server = Gunicorn(clean_env(OTEL_SDK_DISABLED="true"), workers=1)
    shared, own = server.dir / "app.env", server.dir / "service-app.env"
    settings = {
        **pg.env(pg.create_database()),
        **cache_server.env(db=1),
        "APP_BIND": server.env["APP_BIND"],
        "APP_WORKERS": "1",
        "APP_CACHE_TTL": "30",
    }

    def write(release: str) -> None:
        shared.write_text(settings_file({**settings, "APP_RELEASE": release}))
        own.write_text(settings_file({"APP_DOMAINS": "items,notes"}))

    write("""r1: it's "quoted", ${HOME} $USER #not-a-comment \\n""")
    server.env["APP_ENV_FILES"] = f"{shared}:{own}"
    try:
        server.start()
        async with server.client() as client:
            health = (await client.get("/health")).json()
            assert health["release"] == """r1: it's "quoted", ${HOME} $USER #not-a-comment \\n"""
            write("r2")
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            await asyncio.to_thread(server.wait_for_workers, 2)
            for _ in range(50):  # until the old worker has gone
                if (await client.get("/health")).json()["release"] == "r2":
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/health")).json()["release"] == "r2"
        assert server.stop() == 0
    finally:
        server.cleanup()
