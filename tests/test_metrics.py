"""Prometheus metrics: route templates, and sums over every Gunicorn worker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api, running_app
from tests.servers import CacheServer, GunicornServer, PostgresServer, clean_env
from tests.stack import JWT_SECRET, seed_001_settings


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in an exposition (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


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
    assert delta("http_request_duration_seconds_bucket", method="GET", route=item, le="+Inf") == 3
    # The scrapes are not counted, and nothing is in progress between requests.
    assert 'route="/metrics"' not in after
    assert sample(after, "http_requests_in_progress", method="GET") == 0


async def test_a_service_labels_routes_as_published(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    settings = seed_001_settings(pg, cache_server, domains=("users",), root_path="/users")
    async with running_app(settings, domains=["users"]) as users:
        before = await scrape(users.client, "/users/metrics")
        await users.client.get("/users/me")  # the public path, passed on unchanged
        await users.client.get("/me")  # the same, from a proxy that strips the prefix
        await users.client.get("/users")  # the collection
        after = await scrape(users.client, "/users/metrics")
    for route, count in (("/users/me", 2), ("/users", 1)):
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
