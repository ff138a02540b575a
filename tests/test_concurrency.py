"""A worker works on at most APP_MAX_CONCURRENT_REQUESTS requests; the rest wait, none fail."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from app.core.concurrency import ConcurrencyLimitMiddleware, slot_released
from app.core.settings import SettingsError, load_serving_settings
from app.main import create_app


class Gate:
    """An ASGI app whose requests block until released; it records how many ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.append(scope["path"])
        try:
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.running -= 1


async def test_requests_beyond_the_limit_wait_in_arrival_order() -> None:
    gate = Gate()
    transport = httpx.ASGITransport(app=ConcurrencyLimitMiddleware(gate, limit=2))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        requests = []
        for n in range(6):
            requests.append(asyncio.create_task(client.get(f"/{n}")))
            await asyncio.sleep(0.01)  # arrive in order
        await asyncio.sleep(0.05)
        assert gate.running == 2, "two at work, four waiting"
        assert gate.started == ["/0", "/1"]
        gate.release.set()
        answers = await asyncio.gather(*requests)
    assert [a.status_code for a in answers] == [200] * 6
    assert gate.most == 2
    assert gate.started == [f"/{n}" for n in range(6)]


async def test_a_failing_request_gives_its_slot_back() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    limited = ConcurrencyLimitMiddleware(broken, limit=1)
    transport = httpx.ASGITransport(app=limited, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for _ in range(3):  # with the slot leaked, the second would wait forever
            answer = await asyncio.wait_for(client.get("/"), timeout=2)
            assert answer.status_code == 500


async def test_health_checks_are_not_queued() -> None:
    gate = Gate()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await gate(scope, receive, send)

    limited = ConcurrencyLimitMiddleware(app, limit=1, exempt=frozenset({"/health"}))
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        busy = [asyncio.create_task(client.get(f"/{n}")) for n in range(3)]
        await asyncio.sleep(0.05)
        assert gate.running == 1
        health = await asyncio.wait_for(client.get("/health"), timeout=2)
        assert health.status_code == 200
        gate.release.set()
        await asyncio.gather(*busy)


async def test_a_request_waiting_on_a_service_lends_its_slot() -> None:
    """limit=1: /outer waits inside slot_released() for /inner, which needs the slot."""
    inner_done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/outer":
            async with slot_released():
                await asyncio.wait_for(inner_done.wait(), timeout=2)
        else:
            inner_done.set()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    transport = httpx.ASGITransport(app=ConcurrencyLimitMiddleware(app, limit=1))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        outer = asyncio.create_task(client.get("/outer"))
        await asyncio.sleep(0.05)
        inner = await asyncio.wait_for(client.get("/inner"), timeout=2)
        assert inner.status_code == 200
        assert (await outer).status_code == 200


def test_the_app_takes_its_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_MAX_CONCURRENT_REQUESTS", "7")
    app = create_app()
    limits = [m.kwargs["limit"] for m in app.user_middleware if m.cls is ConcurrencyLimitMiddleware]
    assert limits == [7]


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_limit_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("APP_MAX_CONCURRENT_REQUESTS", value)
    with pytest.raises(SettingsError, match="APP_MAX_CONCURRENT_REQUESTS"):
        load_serving_settings()
