"""Whose X-Forwarded-For the app believes when proxies on other hosts reach it over TCP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devservers import CacheServer, GunicornServer, PostgresServer, clean_env, free_port

CLIENT_IP = "203.0.113.9"


def _serve_on_tcp(
    pg: PostgresServer, cache: CacheServer, allow: str
) -> Iterator[tuple[str, GunicornServer]]:
    port = free_port()
    env = clean_env(**pg.env(pg.create_database()), **cache.env(db=2))
    server = GunicornServer(env, workers=1)
    server.env.update(APP_BIND=f"127.0.0.1:{port}", APP_FORWARDED_ALLOW_IPS=allow)
    try:
        server.start()
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.cleanup()


@pytest.fixture
def untrusted_peer(
    pg: PostgresServer, cache_server: CacheServer
) -> Iterator[tuple[str, GunicornServer]]:
    yield from _serve_on_tcp(pg, cache_server, allow="")


@pytest.fixture
def trusted_peer(
    pg: PostgresServer, cache_server: CacheServer
) -> Iterator[tuple[str, GunicornServer]]:
    yield from _serve_on_tcp(pg, cache_server, allow="192.0.2.1,127.0.0.0/8")


def _access_line(server: GunicornServer) -> str:
    assert server.stop() == 0
    lines = [line for line in server.stdout.read_text().splitlines() if "GET /health" in line]
    assert len(lines) == 1, lines
    return lines[0]


async def test_a_tcp_peer_not_listed_cannot_choose_its_address(untrusted_peer) -> None:
    url, server = untrusted_peer
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/health", headers={"X-Forwarded-For": CLIENT_IP})
    assert answer.status_code == 200
    line = _access_line(server)
    assert line.startswith("127.0.0.1:"), line
    assert CLIENT_IP not in line


async def test_a_listed_proxy_passes_the_client_address_on(trusted_peer) -> None:
    url, server = trusted_peer
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/health", headers={"X-Forwarded-For": CLIENT_IP})
    assert answer.status_code == 200
    assert _access_line(server).startswith(f"{CLIENT_IP}:0 - ")
