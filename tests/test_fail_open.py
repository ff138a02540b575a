"""With the cache dead, hung or refusing our password, the API answers from PostgreSQL, fast."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from app.core.cache import CircuitBreaker
from devservers import CacheServer, PostgresServer, free_port
from tests.apps import Api, cache_client, make_settings, running_app

BREAKER_LOG = "app.core.cache"


@pytest.fixture
def own_cache() -> Iterator[CacheServer]:
    """A cache server this test may stop, freeze and restart without disturbing others."""
    server = CacheServer().start()
    try:
        yield server
    finally:
        server.stop(remove=True)


async def timed_get(api: Api, url: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await api.client.get(url)
    return response, time.perf_counter() - started


async def read_latencies(api: Api, url: str, count: int, pause: float = 0.0) -> list[float]:
    latencies = []
    for _ in range(count):
        response, elapsed = await timed_get(api, url)
        assert response.status_code == 200
        latencies.append(elapsed)
        await asyncio.sleep(pause)
    return latencies


def breaker_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == BREAKER_LOG and record.levelno == logging.WARNING
    ]


async def test_cache_stopped_mid_test(
    pg: PostgresServer, own_cache: CacheServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=BREAKER_LOG)
    settings = make_settings(pg, own_cache, cache_cooldown=0.5)
    async with running_app(settings) as api:
        await api.client.post("/api/items", json={"name": "survivor"})
        assert (await api.client.get("/api/items/1")).status_code == 200
        async with cache_client(own_cache) as raw:
            assert await raw.exists("items:1") == 1

        own_cache.stop()

        # Reads and writes all go on, with the database's answers. The reads are spread
        # over more than the breaker's failure span (0.2 s), so it opens.
        latencies = await read_latencies(api, "/api/items/1", 30, pause=0.015)
        patched = await api.client.patch("/api/items/1", json={"name": "patched while down"})
        assert patched.status_code == 200
        assert (await api.client.get("/api/items/1")).json()["name"] == "patched while down"
        assert (await api.client.post("/api/items", json={"name": "new"})).status_code == 201
        assert [i["name"] for i in (await api.client.get("/api/items")).json()] == [
            "patched while down",
            "new",
        ]
        assert (await api.client.post("/api/notes", json={"title": "t", "content": "c"})).is_success
        assert (await api.client.delete("/api/items/2")).status_code == 204

        # A dead cache costs milliseconds, not the seconds of redis-py's defaults: no request
        # waits for a connect timeout (the bound holds on a machine busy with other work,
        # where the median read alone took 53 ms).
        assert max(latencies) < 0.5, latencies
        assert statistics.median(latencies) < settings.cache_connect_timeout, latencies
        # One warning, not one per request.
        warnings = breaker_warnings(caplog)
        assert len(warnings) == 1, warnings
        assert "cache unavailable" in warnings[0]

        # The cache comes back: after the cool-down one request probes it and it is used again.
        own_cache.start()
        await asyncio.sleep(0.6)
        assert (await api.client.get("/api/items/1")).status_code == 200
        assert (await api.client.get("/api/items/1")).json()["name"] == "patched while down"
        async with cache_client(own_cache) as raw:
            assert await raw.exists("items:1") == 1
        assert any("reachable again" in record.getMessage() for record in caplog.records)


async def test_dead_cache_adds_milliseconds(pg: PostgresServer, own_cache: CacheServer) -> None:
    """Read latency with the cache down vs with the cache switched off, in pairs.

    Both apps run side by side and are read in turn, so whatever else slows the machine
    slows both reads of a pair alike: the median of the pairs' differences is what the dead
    cache adds, not the machine's noise.
    """
    own_cache.stop()
    async with (
        running_app(make_settings(pg, own_cache, cache_enabled=False)) as off,
        running_app(make_settings(pg, own_cache, cache_cooldown=0.05), reset=False) as dead,
    ):
        await off.client.post("/api/items", json={"name": "timed"})
        for api in (off, dead):
            await read_latencies(api, "/api/items/1", 10)  # warm the pools
        pairs = []
        for _ in range(40):
            answer_off, took_off = await timed_get(off, "/api/items/1")
            answer_dead, took_dead = await timed_get(dead, "/api/items/1")
            assert answer_off.status_code == answer_dead.status_code == 200
            pairs.append((took_off, took_dead))

    added = statistics.median(d - o for o, d in pairs)
    print(
        f"median read: cache off {statistics.median(o for o, _ in pairs) * 1000:.2f} ms, "
        f"cache dead {statistics.median(d for _, d in pairs) * 1000:.2f} ms, "
        f"added {added * 1000:.2f} ms, slowest {max(d for _, d in pairs) * 1000:.2f} ms"
    )
    assert added < 0.01, pairs
    assert max(d for _, d in pairs) < 0.5


async def test_hung_cache_is_bypassed_after_a_few_timeouts(
    pg: PostgresServer, own_cache: CacheServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen server accepts connections and never answers: the timeouts bound the wait."""
    caplog.set_level(logging.WARNING, logger=BREAKER_LOG)
    settings = make_settings(pg, own_cache, cache_cooldown=60)
    async with running_app(settings) as api:
        await api.client.post("/api/items", json={"name": "frozen"})
        await api.client.get("/api/items/1")
        own_cache.pause()
        try:
            latencies = await read_latencies(api, "/api/items/1", 20)
        finally:
            own_cache.resume()
    # The first requests each wait for a socket timeout or two (a read, then a fill); once
    # the breaker has opened, none waits at all (each that did would take a timeout more).
    assert max(latencies) < 2 * settings.cache_socket_timeout + 0.5, latencies
    assert statistics.median(latencies[-10:]) < settings.cache_socket_timeout / 2, latencies
    assert len(breaker_warnings(caplog)) == 1
    assert "Timeout" in breaker_warnings(caplog)[0]


async def test_wrong_password(
    pg: PostgresServer, cache_server: CacheServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=BREAKER_LOG)
    settings = make_settings(pg, cache_server, cache_pass="not-the-password", cache_db=3)
    async with running_app(settings) as api:
        assert (await api.client.post("/api/items", json={"name": "auth"})).status_code == 201
        latencies = await read_latencies(api, "/api/items/1", 20, pause=0.015)
        assert (await api.client.get("/api/items")).json()[0]["name"] == "auth"
    async with cache_client(cache_server, db=3) as raw:
        assert await raw.dbsize() == 0
    assert max(latencies) < 0.5
    warnings = breaker_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "Authentication" in warnings[0] or "AUTH" in warnings[0].upper()
    assert "not-the-password" not in caplog.text


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_probes_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown=5.0, clock=clock)
    error = ConnectionError("refused")
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure(error)
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.allow()
    breaker.record_failure(error)
    assert breaker.state == CircuitBreaker.OPEN
    assert not breaker.allow()

    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # the probe
    assert breaker.state == CircuitBreaker.HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.record_failure(error)  # a failed probe re-opens at once
    assert breaker.state == CircuitBreaker.OPEN
    assert not breaker.allow()

    clock.now += 5.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.failures == 0
    assert breaker.allow()


def test_breaker_recovers_from_a_lost_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=2.0, clock=clock)
    breaker.record_failure(TimeoutError())
    clock.now += 2.0
    assert breaker.allow()  # a probe whose request is then cancelled: it never reports
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_a_burst_of_failures_at_one_instant_does_not_open() -> None:
    """An event-loop stall times out every in-flight call at once: not a dead cache."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown=5.0, min_failure_span=0.2, clock=clock)
    for _ in range(30):
        breaker.record_failure(TimeoutError())
    assert breaker.state == CircuitBreaker.CLOSED
    breaker.record_success()
    # The same failures spread over the span do open it.
    for _ in range(3):
        breaker.record_failure(TimeoutError())
        clock.now += 0.1
    assert breaker.state == CircuitBreaker.CLOSED
    breaker.record_failure(TimeoutError())
    assert breaker.state == CircuitBreaker.OPEN


def test_successes_reset_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown=1.0, clock=FakeClock())
    for _ in range(5):
        breaker.record_failure(ConnectionError())
        breaker.record_failure(ConnectionError())
        breaker.record_success()
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.opened_total == 0


async def test_database_down_is_503_and_cached_reads_still_answer(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    async with running_app(make_settings(pg, cache_server)) as api:
        assert (await api.client.post("/api/items", json={"name": "cached"})).status_code == 201
        assert (await api.client.get("/api/items/1")).status_code == 200
    unreachable = make_settings(
        pg, cache_server, db_port=free_port(), db_create_schema=False, db_connect_timeout=1
    )
    async with running_app(unreachable, reset=False) as api:
        hit = await api.client.get("/api/items/1")
        assert hit.status_code == 200
        assert hit.json()["name"] == "cached"
        for response in (
            await api.client.get("/api/items/2"),
            await api.client.post("/api/items", json={"name": "lost"}),
        ):
            assert response.status_code == 503
            assert response.json() == {"detail": "database unavailable"}
            assert response.headers["retry-after"] == "1"
