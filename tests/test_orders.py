"""Orders: server-side totals, the user check and the charge over real HTTP, own orders only.

The app serves users, orders and payments on a Unix socket and calls itself through it,
as the single-process deployment does; separate services are tested in test_gateway.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from app.core.settings import Settings
from app.main import create_app
from tests.conftest import Api
from tests.servers import CacheServer, PostgresServer, free_port
from tests.stack import (
    SEED_001,
    register,
    reset,
    seed_001_settings,
    serve,
    socket_client,
    socket_dir,
)

LINES = [
    {"name": "Product 1", "quantity": 2, "price": 29.99},
    {"name": "Product 2", "quantity": 1, "price": "49.99"},
    {"name": "Product 3", "quantity": 3, "price": 0.1},
]
TOTAL = "110.27"  # 59.98 + 49.99 + 0.30, exactly


@dataclass
class Stack:
    api: Api
    settings: Settings
    directory: Path

    @property
    def client(self) -> httpx.AsyncClient:
        return self.api.client


@asynccontextmanager
async def single_app(
    pg: PostgresServer, cache: CacheServer, **overrides: Any
) -> AsyncIterator[Stack]:
    """All seed-001 domains in one app that reaches users and payments through itself."""
    with socket_dir() as directory:
        own = f"unix:{directory / 'app.sock'}"
        values: dict[str, Any] = {
            "users_url": own,
            "payments_url": own,
            "payment_success_rate": 1.0,
            **overrides,
        }
        settings = seed_001_settings(pg, cache, **values)
        app = create_app(settings, SEED_001)
        async with serve(app, directory / "app.sock"), socket_client(directory / "app.sock") as c:
            yield Stack(await reset(app, c), settings, directory)


@pytest.fixture
async def stack(pg: PostgresServer, cache_server: CacheServer) -> AsyncIterator[Stack]:
    async with single_app(pg, cache_server) as running:
        yield running


async def place(stack: Stack, auth: dict[str, str], body: Any = None) -> httpx.Response:
    return await stack.client.post("/orders", json=body or {"items": LINES}, headers=auth)


async def test_an_order_is_totalled_by_the_server_and_paid(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    response = await place(stack, alice)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "confirmed"
    assert order["total"] == TOTAL
    assert order["failure_reason"] is None
    assert [(i["name"], i["quantity"], i["price"], i["line_total"]) for i in order["items"]] == [
        ("Product 1", 2, "29.99", "59.98"),
        ("Product 2", 1, "49.99", "49.99"),
        ("Product 3", 3, "0.10", "0.30"),
    ]
    # The payments service charged exactly the total, for this order, as Alice.
    payment = (await stack.client.get(f"/payments/{order['payment_id']}", headers=alice)).json()
    assert (payment["amount"], payment["order_id"], payment["status"]) == (
        TOTAL,
        order["id"],
        "completed",
    )
    assert payment["user_id"] == order["user_id"]
    # A retry of that charge (same key) is the same payment, not a second one.
    retry = await stack.client.post(
        "/payments",
        json={"order_id": order["id"], "amount": TOTAL},
        headers={**alice, "Idempotency-Key": f"order:{order['id']}"},
    )
    assert (retry.status_code, retry.json()["id"]) == (200, payment["id"])
    assert await stack.api.count("payments") == 1
    # And the order refunds through its payment.
    refund = await stack.client.post(f"/payments/{payment['id']}/refund", headers=alice)
    assert refund.json()["status"] == "refunded"


async def test_orders_calling_their_own_app_cannot_starve_it(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    """One request at a time per worker, and each order calls the same app twice: the order
    gives its slot up while it waits on those calls (app/core/concurrency.py)."""
    async with single_app(pg, cache_server, max_concurrent_requests=1) as one_slot:
        alice = await register(one_slot.client, "alice")
        started = time.perf_counter()
        answers = await asyncio.gather(*(place(one_slot, alice) for _ in range(4)))
        elapsed = time.perf_counter() - started
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert {a.json()["status"] for a in answers} == {"confirmed"}
    # Holding the slot, the first order would wait for its users call until the service
    # timeout (5 s) and fail; released, all four take a fraction of that.
    assert elapsed < one_slot.settings.service_timeout, elapsed


async def test_a_declined_payment_fails_the_order_and_keeps_it(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    async with single_app(pg, cache_server, payment_success_rate=0.0) as stack:
        alice = await register(stack.client, "alice")
        response = await place(stack, alice)
        assert response.status_code == 201
        order = response.json()
        assert (order["status"], order["failure_reason"]) == ("failed", "payment declined")
        payment = await stack.client.get(f"/payments/{order['payment_id']}", headers=alice)
        assert payment.json()["status"] == "failed"
        kept = await stack.client.get(f"/orders/{order['id']}", headers=alice)
        assert kept.json() == order


BAD_ORDERS: list[Any] = [
    {"items": []},
    {},
    {"items": LINES, "total": "0.01"},  # the client never sets the total
    {"items": LINES, "total_amount": 110.27},
    {"items": [{"name": "x", "quantity": 0, "price": 1}]},
    {"items": [{"name": "x", "quantity": -1, "price": 1}]},
    {"items": [{"name": "x", "quantity": 1.5, "price": 1}]},
    {"items": [{"name": "x", "quantity": "2", "price": 1}]},
    {"items": [{"name": "x", "quantity": True, "price": 1}]},
    {"items": [{"name": "x", "quantity": 1001, "price": 1}]},
    {"items": [{"name": "x", "quantity": 1, "price": 0}]},
    {"items": [{"name": "x", "quantity": 1, "price": -9.99}]},
    {"items": [{"name": "x", "quantity": 1, "price": 0.001}]},
    {"items": [{"name": "x", "quantity": 1, "price": "19.999999999999999999"}]},
    {"items": [{"name": "x", "quantity": 1, "price": 1e-7}]},
    {"items": [{"name": "x", "quantity": 1, "price": "1000000.01"}]},
    {"items": [{"name": "x", "quantity": 1, "price": "NaN"}]},
    {"items": [{"name": "", "quantity": 1, "price": 1}]},
    {"items": [{"name": "x" * 256, "quantity": 1, "price": 1}]},
    {"items": [{"name": "x\x00", "quantity": 1, "price": 1}]},
    {"items": [{"quantity": 1, "price": 1}]},
    {"items": [{"name": "x", "quantity": 1, "price": 1, "line_total": 0.01}]},
    {"items": [{"name": "x", "quantity": 1, "price": 1}] * 101},
    {"items": {"name": "x", "quantity": 1, "price": 1}},
]


async def test_bad_orders_are_422_and_write_nothing(stack: Stack) -> None:
    # One app for them all: starting one per case would cost seconds.
    alice = await register(stack.client, "alice")
    for body in BAD_ORDERS:
        response = await stack.client.post("/orders", json=body, headers=alice)
        assert response.status_code == 422, (body, response.text)
    for table in ("orders", "order_items", "payments"):
        assert await stack.api.count(table) == 0


async def test_the_largest_order_fits(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    line = {"name": "x", "quantity": 1000, "price": "1000000.00"}
    response = await place(stack, alice, {"items": [line] * 100})
    assert response.status_code == 201, response.text
    assert response.json()["total"] == "100000000000.00"


async def test_own_orders_only(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    bob = await register(stack.client, "bob")
    mine = [(await place(stack, alice)).json() for _ in range(2)]
    bobs = (await place(stack, bob)).json()

    listed = await stack.client.get("/orders", headers=alice)
    assert [o["id"] for o in listed.json()] == [o["id"] for o in mine]
    page = await stack.client.get("/orders?skip=1&limit=1", headers=alice)
    assert [o["id"] for o in page.json()] == [mine[1]["id"]]
    theirs = await stack.client.get(f"/orders/{bobs['id']}", headers=alice)
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": f"order {bobs['id']} not found"}
    assert (await stack.client.get("/orders/999", headers=alice)).status_code == 404
    # Nor can Alice see Bob's payment.
    payment = await stack.client.get(f"/payments/{bobs['payment_id']}", headers=alice)
    assert payment.status_code == 404
    for response in (
        await stack.client.get("/orders"),
        await stack.client.get(f"/orders/{mine[0]['id']}"),
        await stack.client.post("/orders", json={"items": LINES}),
    ):
        assert response.status_code == 401


@contextmanager
def hung_socket(path: Path) -> Iterator[None]:
    """A socket that accepts connections (in the kernel) and never answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(16)
        yield


async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 502, "headers": []})
    await send({"type": "http.response.body", "body": b"bad gateway"})


@pytest.mark.parametrize("failure", ["no socket", "closed port", "hung", "502"])
async def test_payment_service_down_fails_the_order_and_keeps_it(
    pg: PostgresServer, cache_server: CacheServer, failure: str
) -> None:
    with socket_dir() as elsewhere:
        payments = {
            "no socket": f"unix:{elsewhere / 'missing.sock'}",
            "closed port": f"http://127.0.0.1:{free_port()}",
            "hung": f"unix:{elsewhere / 'hung.sock'}",
            "502": f"unix:{elsewhere / 'failing.sock'}",
        }[failure]
        async with single_app(
            pg, cache_server, payments_url=payments, service_timeout=0.5
        ) as stack:
            alice = await register(stack.client, "alice")
            if failure == "hung":
                with hung_socket(elsewhere / "hung.sock"):
                    response = await place(stack, alice)
            elif failure == "502":
                async with serve(failing_app, elsewhere / "failing.sock", lifespan="off"):
                    response = await place(stack, alice)
            else:
                response = await place(stack, alice)
            assert response.status_code == 201, response.text
            order = response.json()
            assert order["status"] == "failed"
            assert order["total"] == TOTAL
            assert order["payment_id"] is None
            expected = (
                "payment service answered 502"
                if failure == "502"
                else ("payment service unavailable")
            )
            assert order["failure_reason"] == expected
            listed = await stack.client.get("/orders", headers=alice)
            assert [o["id"] for o in listed.json()] == [order["id"]]
            assert await stack.api.count("order_items") == 3
            assert await stack.api.count("payments") == 0


async def test_user_service_down_refuses_the_order_and_writes_nothing(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    with socket_dir() as elsewhere:
        async with single_app(
            pg, cache_server, users_url=f"unix:{elsewhere / 'missing.sock'}"
        ) as stack:
            alice = await register(stack.client, "alice")
            response = await place(stack, alice)
            assert response.status_code == 503
            assert response.json() == {"detail": "user service unavailable"}
            assert response.headers["retry-after"] == "1"
            assert await stack.api.count("orders") == 0
            assert await stack.api.count("payments") == 0


async def test_a_token_of_a_deleted_user_places_no_order(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    await stack.api.sql("DELETE FROM users")
    response = await place(stack, alice)
    assert response.status_code == 401
    assert await stack.api.count("orders") == 0


async def test_one_trace_spans_the_order_and_the_calls_it_makes(stack: Stack) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    alice = await register(stack.client, "alice")
    exporter = InMemorySpanExporter()
    stack.api.app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert (await place(stack, alice)).status_code == 201
    spans = exporter.get_finished_spans()

    servers = {s.name: s for s in spans if s.kind == SpanKind.SERVER}
    clients = [s for s in spans if s.kind == SpanKind.CLIENT and s.name in ("GET", "POST")]
    order = servers["POST /orders"]
    assert {"GET /users/me", "POST /payments"} <= set(servers)
    assert len(clients) == 2
    for client in clients:  # the orders domain's calls, children of its request...
        assert client.parent is not None and client.parent.span_id == order.context.span_id
    for name in ("GET /users/me", "POST /payments"):  # ... and parents of the answers
        callee = servers[name]
        assert callee.context.trace_id == order.context.trace_id
        assert callee.parent is not None
        assert callee.parent.span_id in {c.context.span_id for c in clients}
