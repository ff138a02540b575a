"""Orders: server-side totals, the user check and the charge over real HTTP, own orders only.

The app serves users, orders and payments on a Unix socket and calls itself through it,
as the single-process deployment does; separate services are tested in test_gateway.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from app.main import create_app
from devservers import CacheServer, PostgresServer, free_port
from tests.stack import (
    Stack,
    register,
    reset,
    seed_001_settings,
    serve,
    single_app,
    socket_client,
    socket_dir,
    token_for,
)

LINES = [
    {"name": "Product 1", "quantity": 2, "price": 29.99},
    {"name": "Product 2", "quantity": 1, "price": "49.99"},
    {"name": "Product 3", "quantity": 3, "price": 0.1},
]
TOTAL = "110.27"  # 59.98 + 49.99 + 0.30, exactly


async def place(
    stack: Stack, auth: dict[str, str], body: Any = None, key: str | None = None
) -> httpx.Response:
    headers = auth if key is None else {**auth, "Idempotency-Key": key}
    return await stack.client.post("/orders", json=body or {"items": LINES}, headers=headers)


async def test_an_order_is_totalled_by_the_server_and_paid(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    response = await place(stack, alice)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "confirmed"
    assert order["total_amount"] == order["total"] == TOTAL  # the seed's name, and ours
    assert (order["currency"], order["payment_method"]) == ("USD", "credit_card")
    assert order["failure_reason"] is None
    assert [
        (i["product_name"], i["name"], i["quantity"], i["price"], i["line_total"])
        for i in order["items"]
    ] == [
        ("Product 1", "Product 1", 2, "29.99", "59.98"),
        ("Product 2", "Product 2", 1, "49.99", "49.99"),
        ("Product 3", "Product 3", 3, "0.10", "0.30"),
    ]
    # The payments service charged exactly the total, for this order, as Alice.
    payment = (await stack.client.get(f"/payments/{order['payment_id']}", headers=alice)).json()
    assert (payment["amount"], payment["order_id"], payment["status"]) == (
        TOTAL,
        order["id"],
        "completed",
    )
    assert payment["user_id"] == order["user_id"]
    assert (payment["currency"], payment["payment_method"]) == ("USD", "credit_card")
    # Paying it again, as the seed's client does after placing it, is the same payment.
    again = await stack.client.post(
        "/payments",
        json={"order_id": order["id"], "amount": TOTAL, "payment_method": "credit_card"},
        headers=alice,
    )
    assert (again.status_code, again.json()["id"]) == (200, payment["id"])
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
    {"items": LINES, "total_amount": "110.28"},  # nor does a total it expects that is off
    {"items": LINES, "total_amount": 0},
    {"items": LINES, "currency": "usd"},
    {"items": LINES, "currency": "XYZ"},
    {"items": LINES, "currency": "JPY"},  # no cents: amounts here have two places
    {"items": LINES, "payment_method": "cash"},
    {"items": [{"name": "x", "product_name": "x", "quantity": 1, "price": 1}]},
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
async def test_payment_service_down_keeps_the_order(
    pg: PostgresServer, cache_server: CacheServer, failure: str
) -> None:
    """Not connected at all, the charge cannot have happened: the order fails. Timed out
    or answered 5xx, it may have: the order stays pending, for a retry or the sweep."""
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
            if failure in ("no socket", "closed port"):
                assert order["status"] == "failed"
                assert order["failure_reason"] == "payment service unavailable"
            else:
                assert order["status"] == "pending"
                assert order["failure_reason"] is None
            assert order["total"] == TOTAL
            assert order["payment_id"] is None
            listed = await stack.client.get("/orders", headers=alice)
            assert [o["id"] for o in listed.json()] == [order["id"]]
            assert await stack.api.count("order_items") == 3
            assert await stack.api.count("payments") == 0


async def test_user_service_down_refuses_the_order_and_writes_nothing(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    """The orders service alone checks tokens at the users service: unreachable, 503."""
    with socket_dir() as directory:
        missing = f"unix:{directory / 'missing.sock'}"
        settings = seed_001_settings(
            pg, cache_server, users_url=missing, payments_url=missing, orders_url=missing
        )
        app = create_app(settings, ["orders"])
        socket = directory / "orders.sock"
        async with serve(app, socket), socket_client(socket) as client:
            api = await reset(app, client)
            response = await client.post(
                "/orders", json={"items": LINES}, headers=token_for(1, settings)
            )
            assert response.status_code == 503
            assert response.json() == {"detail": "user service unavailable"}
            assert response.headers["retry-after"] == "1"
            assert await api.count("orders") == 0


async def test_a_token_of_a_deleted_user_places_no_order(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    await stack.api.sql("DELETE FROM users")
    response = await place(stack, alice)
    assert response.status_code == 401
    assert await stack.api.count("orders") == 0


async def test_one_trace_spans_the_order_and_the_charge(stack: Stack) -> None:
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
    charge = servers["POST /payments/internal/charges"]
    # One app: the token is checked against its own users table, no call for that.
    assert len(clients) == 1
    assert clients[0].parent is not None
    assert clients[0].parent.span_id == order.context.span_id
    assert charge.context.trace_id == order.context.trace_id
    assert charge.parent is not None and charge.parent.span_id == clients[0].context.span_id


# --- The seed's request shapes ---------------------------------------------------------


async def test_the_seed_order_shapes(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    seed = {
        "items": [{"name": "Product 1", "quantity": 2, "price": 29.99}],
        "total_amount": 59.98,
    }
    first = await place(stack, alice, seed)
    assert first.status_code == 201, first.text
    assert first.json()["total_amount"] == "59.98"
    by_product_name = {
        "items": [{"product_name": "Product 2", "quantity": 1, "price": 49.99}],
        "currency": "EUR",
        "payment_method": "debit_card",
    }
    second = await place(stack, alice, by_product_name)
    assert second.status_code == 201, second.text
    body = second.json()
    assert body["items"][0]["product_name"] == "Product 2"
    assert (body["currency"], body["payment_method"]) == ("EUR", "debit_card")
    payment = await stack.client.get(f"/payments/{body['payment_id']}", headers=alice)
    assert (payment.json()["currency"], payment.json()["payment_method"]) == ("EUR", "debit_card")

    wrong = await place(stack, alice, {**seed, "total_amount": "59.97"})
    assert wrong.status_code == 422
    assert "total_amount 59.97 does not match the total of the items, 59.98" in wrong.text
    assert await stack.api.count("orders") == 2


# --- Exactly once --------------------------------------------------------------------


async def test_a_retried_order_is_one_order_and_one_charge(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    first = await place(stack, alice, key="order-attempt-1")
    again = await place(stack, alice, key="order-attempt-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await stack.api.count("orders") == 1
    assert await stack.api.count("payments") == 1
    # The same key with another body is refused, naming the header; nothing is written.
    other = await place(stack, alice, {"items": LINES[:1]}, key="order-attempt-1")
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    # Keys are per user: Bob's "same" key is his own order.
    bob = await register(stack.client, "bob")
    bobs = await place(stack, bob, key="order-attempt-1")
    assert bobs.status_code == 201 and "idempotent-replayed" not in bobs.headers
    assert await stack.api.count("orders") == 2


async def test_concurrent_sends_of_one_order_make_one(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    answers = await asyncio.gather(*(place(stack, alice, key="same") for _ in range(4)))
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    # The others waited for the first one's order to commit, then replayed its answer or,
    # if it was not stored yet, resumed that same order: the same body either way.
    assert len({a.content for a in answers}) == 1
    assert await stack.api.count("orders") == 1
    assert await stack.api.count("payments") == 1


async def interrupted_order(
    pg: PostgresServer, cache_server: CacheServer, directory: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """An order whose charge timed out (payments hung): committed, pending, key unanswered."""
    with hung_socket(directory / "hung.sock"):
        async with single_app(
            pg, cache_server, payments_url=f"unix:{directory / 'hung.sock'}", service_timeout=0.3
        ) as stack:
            alice = await register(stack.client, "alice")
            response = await place(stack, alice, key="k-interrupted")
            assert response.json()["status"] == "pending"
            return response.json(), alice


async def test_a_retry_resumes_an_interrupted_order(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    with socket_dir() as directory:
        pending, alice = await interrupted_order(pg, cache_server, directory)
    # The same database, payments answering now; no sweep, so only the retry can finish it.
    async with single_app(pg, cache_server, keep=True, order_sweep_interval=3600) as stack:
        assert await stack.api.count("payments") == 0
        retry = await place(stack, alice, key="k-interrupted")
        assert retry.status_code == 201, retry.text
        order = retry.json()
        assert (order["id"], order["status"]) == (pending["id"], "confirmed")
        again = await place(stack, alice, key="k-interrupted")
        assert again.json() == order and again.headers["idempotent-replayed"] == "true"
        assert await stack.api.count("orders") == 1
        assert await stack.api.count("payments") == 1


async def test_the_sweep_finishes_an_interrupted_order(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    with socket_dir() as directory:
        pending, alice = await interrupted_order(pg, cache_server, directory)
    async with single_app(
        pg, cache_server, keep=True, order_sweep_interval=0.2, order_stale_after=0.1
    ) as stack:
        deadline = time.monotonic() + 15
        order = pending
        while order["status"] == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            order = (await stack.client.get(f"/orders/{pending['id']}", headers=alice)).json()
        assert order["status"] == "confirmed", order
        assert await stack.api.count("payments") == 1
        # The client's late retry gets the finished order, and charges nothing more.
        retry = await place(stack, alice, key="k-interrupted")
        assert (retry.status_code, retry.json()["status"]) == (201, "confirmed")
        assert retry.json()["payment_id"] == order["payment_id"]
        assert await stack.api.count("payments") == 1
