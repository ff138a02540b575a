"""Prometheus metrics: route templates, the cache, the pool, orders and payments, bounded
labels, and sums over every Gunicorn worker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devservers import CacheServer, GunicornServer, PostgresServer, clean_env
from tests.apps import Api, running_app
from tests.stack import JWT_SECRET, register, seed_001_settings


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` that carry ``labels`` (0 if none)."""
    return sum(
        float(found.value)
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and all(found.labels.get(k) == v for k, v in labels.items())
    )


def series(text: str, name: str = "http_requests_total") -> int:
    return sum(
        found.name == name
        for family in text_string_to_metric_families(text)
        for found in family.samples
    )


def label_values(text: str, name: str, label: str) -> set[str]:
    return {
        found.labels[label]
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and label in found.labels
    }


async def scrape(client: httpx.AsyncClient, path: str = "/metrics") -> str:
    response = await client.get(path, headers={"Connection": "close"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


async def test_requests_are_counted_by_route_template(api: Api) -> None:
    before = await scrape(api.client)
    await api.client.post("/api/items", json={"name": "a"})
    for item_id in (1, 2, 2):
        await api.client.get(f"/api/items/{item_id}")
    await api.client.get("/no/such/path")
    await api.client.delete("/api/notes")  # 405
    after = await scrape(api.client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    item = "/api/items/{item_id}"
    assert delta("http_requests_total", method="GET", route=item, status="200") == 1
    assert delta("http_requests_total", method="GET", route=item, status="404") == 2
    assert delta("http_requests_total", method="POST", route="/api/items", status="201") == 1
    assert delta("http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert delta("http_requests_total", method="DELETE", route="/api/notes", status="405") == 1
    assert delta("http_request_duration_seconds_count", method="GET", route=item) == 3
    assert delta("http_request_duration_seconds_count", route=item, status="404") == 2
    assert delta("http_request_duration_seconds_bucket", method="GET", route=item, le="+Inf") == 3
    # The scrapes are not counted, and nothing is in progress between requests.
    assert 'route="/metrics"' not in after
    assert sample(after, "http_requests_in_progress", method="GET") == 0


async def test_docs_are_labelled_by_their_route_and_labels_stay_bounded(api: Api) -> None:
    before = await scrape(api.client)
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert (await api.client.get(path)).status_code == 200
    middle = await scrape(api.client)
    for item_id in range(1, 30):  # a series per template, not per path
        await api.client.get(f"/api/items/{item_id}")
        await api.client.get(f"/no/such/{item_id}")
    after = await scrape(api.client)
    for path in ("/docs", "/openapi.json", "/redoc"):
        labels = {"route": path, "status": "200"}
        assert (
            sample(middle, "http_requests_total", **labels)
            - sample(before, "http_requests_total", **labels)
            == 1
        ), path
    routes = label_values(after, "http_requests_total", "route")
    assert "/api/items/{item_id}" in routes
    assert not [route for route in routes if any(c.isdigit() for c in route)], routes
    # 58 paths made at most two new series: (item, 404) and (<unmatched>, 404).
    assert series(after) - series(middle) <= 2


async def test_cache_reads_and_the_pool_are_counted(api: Api) -> None:
    created = await api.client.post("/api/items", json={"name": "cached"})
    item = f"/api/items/{created.json()['id']}"
    before = await scrape(api.client)
    await api.client.get(item)  # read from PostgreSQL, then cached
    await api.client.get(item)  # from the cache
    after = await scrape(api.client)
    for result, count in (("miss", 1), ("hit", 1)):
        assert (
            sample(after, "webstack_cache_requests_total", result=result)
            - sample(before, "webstack_cache_requests_total", result=result)
            == count
        ), result
    # Every connection went back to its pool.
    assert sample(after, "webstack_db_pool_connections_in_use") == 0
    assert "webstack_db_pool_connections_in_use" in after


def test_the_breaker_state_is_exported() -> None:
    from prometheus_client import REGISTRY

    from app.core.cache import CircuitBreaker

    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, cooldown=5, clock=lambda: now[0])

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("webstack_cache_breaker_open")

    # The gauge is the process's (one breaker per worker); other tests' apps share it.
    breaker.record_failure(OSError("down"))
    breaker.record_failure(OSError("down"))
    assert gauge() == 1
    breaker.record_success()
    assert gauge() == 0


async def test_a_service_labels_routes_as_published(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    settings = seed_001_settings(pg, cache_server, domains=("users",), root_path="/users")
    async with running_app(settings, domains=["users"]) as users:
        before = await scrape(users.client, "/users/metrics")
        await users.client.get("/users/me")  # the public path, passed on unchanged
        await users.client.get("/users")  # the collection
        after = await scrape(users.client, "/users/metrics")
    for route, count in (("/users/me", 1), ("/users", 1)):
        labels = {"method": "GET", "route": route, "status": "401"}
        assert (
            sample(after, "http_requests_total", **labels)
            - sample(before, "http_requests_total", **labels)
            == count
        )


async def test_metrics_can_be_turned_off(settings: object) -> None:
    off = settings.model_copy(update={"metrics_enabled": False})  # type: ignore[attr-defined]
    async with running_app(off) as api:
        assert (await api.client.get("/metrics")).status_code == 404


class Gunicorn(GunicornServer):
    def client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url="http://app.internal")

    def worker_pids(self) -> set[int]:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}


async def test_metrics_are_summed_over_gunicorn_workers(
    pg: PostgresServer, cache_server: CacheServer, tmp_path: Path
) -> None:
    """Two workers, a worker replaced, and a stale file of an earlier run: the counts stay
    exact whichever worker answers the scrape."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"left by an earlier run")
    cache_server.flush(db=3)
    env = clean_env(
        **pg.env(pg.create_database()),
        **cache_server.env(db=3),
        APP_DOMAINS="users",
        APP_ROOT_PATH="/users",
        APP_JWT_SECRET=JWT_SECRET,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        OTEL_SDK_DISABLED="true",
    )
    server = Gunicorn(env, workers=2)
    try:
        server.start()
        assert not (metrics_dir / "counter_99999.db").exists()
        async with server.client() as client:
            # The docs of a service through its root path, as nginx passes them on.
            docs = await client.get("/users/docs")
            assert "url: '/users/openapi.json'" in docs.text
            assert (await client.get("/users/openapi.json")).status_code == 200

            async def hit(count: int) -> None:
                # New connections, so that both workers take some.
                for _ in range(count // 10):
                    responses = await asyncio.gather(
                        *(
                            client.get("/users/health", headers={"Connection": "close"})
                            for _ in range(10)
                        )
                    )
                    assert {r.status_code for r in responses} == {200}

            await hit(60)
            health = {"method": "GET", "route": "/users/health", "status": "200"}
            for _ in range(6):
                assert (
                    sample(await scrape(client, "/users/metrics"), "http_requests_total", **health)
                    == 60
                )

            # A worker goes (as after max_requests): its counts stay, its gauge goes.
            served = {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("counter_*.db")}
            assert served <= server.worker_pids()
            gone = min(served)
            os.kill(gone, signal.SIGTERM)
            await asyncio.to_thread(server.wait_for_workers, 3)
            deadline = time.monotonic() + 10
            while any(metrics_dir.glob(f"gauge_livesum_{gone}.db")):
                assert time.monotonic() < deadline, "the dead worker's gauge was kept"
                await asyncio.sleep(0.05)
            await hit(20)
            for _ in range(6):
                text = await scrape(client, "/users/metrics")
                assert sample(text, "http_requests_total", **health) == 80
                assert (
                    sample(
                        text,
                        "http_request_duration_seconds_count",
                        method="GET",
                        route="/users/health",
                    )
                    == 80
                )
                assert sample(text, "http_requests_in_progress", method="GET") == 0
        assert server.stop() == 0
        assert "Traceback" not in server.stderr.read_text()
    finally:
        server.cleanup()


async def test_orders_and_payments_are_counted_by_outcome(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    from tests.test_orders import place, single_app

    async with single_app(pg, cache_server) as stack:
        alice = await register(stack.client, "alice")
        before = await scrape(stack.client)
        order = (await place(stack, alice)).json()
        refund = await stack.client.post(f"/payments/{order['payment_id']}/refund", headers=alice)
        assert refund.status_code == 200, refund.text
        after = await scrape(stack.client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("webstack_orders_total", status="confirmed") == 1
    assert delta("webstack_orders_total") == 1
    assert delta("webstack_payments_total", outcome="completed") == 1
    assert delta("webstack_payments_total", outcome="refunded") == 1
    assert delta("webstack_payments_total") == 2
