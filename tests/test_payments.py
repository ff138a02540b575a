"""Payments: the simulated processor, one charge per order, refunds, own payments only.

The charge logic is exercised at the internal route the orders service calls (the
payments service alone, with the orders service's credential); what users may pay, and
refunds, through one app that serves users, orders and payments.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import jwt
import pytest

from app.core.auth import SERVICE_AUDIENCE, SERVICE_SUBJECT, issue_service_token
from app.core.settings import Settings
from app.payments import processor
from devservers import CacheServer, PostgresServer
from tests.apps import Api, DomainApp, running_app
from tests.stack import JWT_SECRET, Stack, register, seed_001_settings, token_for

ALICE, BOB = 1, 2
CHARGES = "/payments/internal/charges"


@pytest.fixture
def payments_settings(pg: PostgresServer, cache_server: CacheServer) -> Settings:
    # Neither is called by the internal route.
    nowhere = "http://127.0.0.1:1"
    return seed_001_settings(pg, cache_server, users_url=nowhere, orders_url=nowhere)


@pytest.fixture
async def payments(domain_app: DomainApp, payments_settings: Settings) -> AsyncIterator[Api]:
    """The payments service alone."""
    async with domain_app("payments", payments_settings) as running:
        yield running


def as_orders(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_service_token(settings)}"}


def order_with(outcome: bool, settings: Settings, user_id: int = ALICE) -> int:
    """An order id whose charge the processor accepts (``outcome``) or declines."""
    for n in range(1, 1000):
        key = f"order:{n}"
        rate = settings.payment_success_rate
        if processor.accepts(settings.payment_seed, user_id, key, rate) == outcome:
            return n
    raise AssertionError("no such order in 1000")


async def charge(
    api: Api,
    settings: Settings,
    order_id: int,
    user_id: int = ALICE,
    key: str | None = None,
    **body: Any,
) -> Any:
    headers = as_orders(settings)
    if key is not None:
        headers["Idempotency-Key"] = key
    data = {"order_id": order_id, "user_id": user_id, "amount": "10.00", **body}
    return await api.client.post(CHARGES, json=data, headers=headers)


def test_processor_is_deterministic_and_keeps_its_rate() -> None:
    draws = [processor.draw("webstack", 1, f"order:{n}") for n in range(4000)]
    assert draws == [processor.draw("webstack", 1, f"order:{n}") for n in range(4000)]
    accepted = sum(d < 0.8 for d in draws) / len(draws)
    assert 0.77 < accepted < 0.83
    assert processor.draw("webstack", 1, "k") != processor.draw("other seed", 1, "k")
    assert processor.draw("webstack", 1, "k") != processor.draw("webstack", 2, "k")
    assert all(processor.accepts("s", 1, f"{n}", 1.0) for n in range(100))
    assert not any(processor.accepts("s", 1, f"{n}", 0.0) for n in range(100))


async def test_accepted_and_declined_charges(payments: Api, payments_settings: Settings) -> None:
    accepted = await charge(payments, payments_settings, order_with(True, payments_settings))
    assert accepted.status_code == 201, accepted.text
    body = accepted.json()
    assert body["status"] == "completed"
    assert (body["amount"], body["currency"], body["payment_method"]) == (
        "10.00",
        "USD",
        "credit_card",
    )
    assert body["user_id"] == ALICE
    assert body["transaction_id"].startswith("txn_")
    assert body["failure_reason"] is None

    declined = await charge(payments, payments_settings, order_with(False, payments_settings))
    assert declined.status_code == 201
    assert declined.json()["status"] == "failed"
    assert declined.json()["failure_reason"] == "declined by the processor (simulated)"
    assert declined.json()["transaction_id"] is None
    assert await payments.count("payments") == 2


async def test_success_rate_setting(payments_settings: Settings) -> None:
    for rate, expected in ((1.0, "completed"), (0.0, "failed")):
        settings = payments_settings.model_copy(update={"payment_success_rate": rate})
        async with running_app(settings, domains=["payments"]) as api:
            statuses = {(await charge(api, settings, n)).json()["status"] for n in range(1, 6)}
            assert statuses == {expected}


async def test_an_order_is_charged_once(payments: Api, payments_settings: Settings) -> None:
    order = order_with(True, payments_settings)
    first = await charge(payments, payments_settings, order)
    again = await charge(payments, payments_settings, order)
    assert first.status_code == 201
    assert again.status_code == 200  # the payment the first attempt made
    assert again.json() == first.json()
    # With a key, the repeat is the first answer itself, replayed.
    keyed = await charge(payments, payments_settings, order + 1, key=f"order:{order + 1}")
    replayed = await charge(payments, payments_settings, order + 1, key=f"order:{order + 1}")
    assert (keyed.status_code, replayed.status_code) == (201, 201)
    assert replayed.json() == keyed.json()
    assert replayed.headers["idempotent-replayed"] == "true"
    assert await payments.count("payments") == 2
    # Another method for a paid order is refused, naming the payment.
    other = await charge(payments, payments_settings, order, payment_method="bank_transfer")
    assert other.status_code == 409
    assert f"order {order} already has payment {first.json()['id']}" in other.json()["detail"]
    assert await payments.count("payments") == 2


@pytest.mark.parametrize("key", [None, "same-key"])
async def test_concurrent_charges_make_one_payment(
    payments: Api, payments_settings: Settings, key: str | None
) -> None:
    responses = await asyncio.gather(
        *(charge(payments, payments_settings, 7, key=key) for _ in range(6))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == ([201] * 6 if key else [200] * 5 + [201]), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await payments.count("payments") == 1


async def test_a_pending_payment_is_finished_by_the_retry(
    payments: Api, payments_settings: Settings
) -> None:
    """The process died after recording the charge: the retry completes it, once."""
    order = order_with(True, payments_settings)
    await payments.sql(
        "INSERT INTO payments (user_id, order_id, idempotency_key, amount, status) "
        "VALUES (:user, :order, :key, 10, 'pending')",
        user=ALICE,
        order=order,
        key=f"order:{order}",
    )
    retry = await charge(payments, payments_settings, order)
    assert retry.status_code == 200
    assert retry.json()["status"] == "completed"
    assert await payments.count("payments") == 1


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (0, "greater than 0"),
        (-5, "greater than 0"),
        ("-0.01", "greater than 0"),
        (1.001, "no more than 2 decimal places"),
        ("0.001", "no more than 2 decimal places"),
        (1e-9, "no more than 2 decimal places"),
        ("100000000000.01", "less than or equal to"),
        (1e300, "less than or equal to"),
        ("NaN", "finite number"),
        ("Infinity", "finite number"),
        (True, "Decimal input"),
        ("ten", "Input should be a valid decimal"),
        (None, "Decimal input"),
    ],
)
async def test_bad_amounts_are_422(
    payments: Api, payments_settings: Settings, amount: Any, reason: str
) -> None:
    response = await charge(payments, payments_settings, 1, amount=amount)
    assert response.status_code == 422, response.text
    assert reason in response.text
    assert await payments.count("payments") == 0


async def test_other_bad_charges(payments: Api, payments_settings: Settings) -> None:
    good = {"order_id": 1, "user_id": ALICE, "amount": "1"}
    bad: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (good, {"Idempotency-Key": "k" * 256}),
        (good, {"Idempotency-Key": b"caf\xc3\xa9"}),  # not ASCII
        ({**good, "order_id": 0}, {}),
        ({k: v for k, v in good.items() if k != "order_id"}, {}),
        ({**good, "status": "completed"}, {}),  # no setting one's own status
        ({**good, "currency": "usd"}, {}),
        ({**good, "payment_method": "cash"}, {}),
        ({}, {}),
    ]
    for body, headers in bad:
        response = await payments.client.post(
            CHARGES, json=body, headers={**as_orders(payments_settings), **headers}
        )
        assert response.status_code == 422, (body, headers, response.text)
    assert await payments.count("payments") == 0


async def test_only_the_orders_service_may_charge_orders(
    payments: Api, payments_settings: Settings
) -> None:
    body = {"order_id": 1, "user_id": ALICE, "amount": "1"}
    now = int(time.time())
    claims = {"sub": SERVICE_SUBJECT, "aud": SERVICE_AUDIENCE, "iss": "webstack"}
    claims |= {"iat": now, "exp": now + 60}
    forged = {
        "no token": None,
        "a user's token": token_for(ALICE, payments_settings)["Authorization"],
        # The service's claims, signed with the users' key: the key is derived, not shared.
        "signed with the JWT secret": "Bearer " + jwt.encode(claims, JWT_SECRET, "HS256"),
        "other audience": "Bearer "
        + jwt.encode({**claims, "aud": "webstack:users"}, JWT_SECRET, "HS256"),
    }
    for name, header in forged.items():
        headers = {} if header is None else {"Authorization": header}
        response = await payments.client.post(CHARGES, json=body, headers=headers)
        assert response.status_code == 401, name
    # And the service credential is no user token: the public routes refuse it.
    as_service = as_orders(payments_settings)
    for method, path in (("GET", "/payments"), ("POST", "/payments"), ("GET", "/payments/1")):
        response = await payments.client.request(method, path, json=body, headers=as_service)
        assert response.status_code == 401, (method, path)
    assert await payments.count("payments") == 0
    # The route is in no schema.
    schema = (await payments.client.get("/openapi.json")).json()
    assert not any("internal" in path for path in schema["paths"])


# --- What a user may pay: one app with users, orders and payments ----------------------


LINE = {"name": "Product 1", "quantity": 2, "price": "29.99"}


async def test_the_seed_payment_of_ones_own_order(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    order = (await stack.client.post("/orders", json={"items": [LINE]}, headers=alice)).json()
    assert order["status"] == "confirmed"
    seed = {"order_id": order["id"], "amount": 59.98, "payment_method": "credit_card"}
    paid = await stack.client.post("/payments", json=seed, headers=alice)
    assert paid.status_code == 200, paid.text  # placing the order charged it already
    assert paid.json()["id"] == order["payment_id"]
    assert await stack.api.count("payments") == 1

    bob = await register(stack.client, "bob")
    theirs = await stack.client.post("/payments", json=seed, headers=bob)
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": f"order {order['id']} not found"}
    missing = await stack.client.post("/payments", json={**seed, "order_id": 999}, headers=alice)
    assert missing.status_code == 404
    wrong_amount = await stack.client.post(
        "/payments", json={**seed, "amount": "59.99"}, headers=alice
    )
    assert wrong_amount.status_code == 422
    assert wrong_amount.json()["detail"] == (
        f"amount 59.99 does not match the total_amount of order {order['id']}, 59.98"
    )
    wrong_currency = await stack.client.post(
        "/payments", json={**seed, "currency": "EUR"}, headers=alice
    )
    assert wrong_currency.status_code == 422
    assert "currency EUR does not match" in wrong_currency.text
    other_method = await stack.client.post(
        "/payments", json={**seed, "payment_method": "debit_card"}, headers=alice
    )
    assert other_method.status_code == 409
    no_order = await stack.client.post("/payments", json={"amount": 1}, headers=alice)
    assert no_order.status_code == 422
    assert await stack.api.count("payments") == 1


async def test_a_pending_order_is_paid_once_and_a_failed_one_not_at_all(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    await stack.api.sql(
        "INSERT INTO orders (user_id, status, total) VALUES"
        " (1, 'pending', 5), (1, 'failed', 5), (1, 'failed', 7)"
    )
    # Order 3 failed because its charge was declined: paying it answers that payment.
    await stack.api.sql(
        "INSERT INTO payments (user_id, order_id, idempotency_key, amount, status,"
        " failure_reason) VALUES (1, 3, 'order:3', 7, 'failed', 'declined')"
    )
    body = {"order_id": 1, "amount": "5.00"}
    first = await stack.client.post("/payments", json=body, headers=alice)
    second = await stack.client.post("/payments", json=body, headers=alice)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    failed = await stack.client.post(
        "/payments", json={"order_id": 2, "amount": "5.00"}, headers=alice
    )
    assert failed.status_code == 409
    assert failed.json() == {"detail": "order 2 failed and cannot be paid; place a new order"}
    declined = await stack.client.post(
        "/payments", json={"order_id": 3, "amount": "7.00"}, headers=alice
    )
    assert declined.status_code == 200, declined.text
    assert (declined.json()["order_id"], declined.json()["status"]) == (3, "failed")
    assert await stack.api.count("payments") == 2


async def paid_order(stack: Stack, auth: dict[str, str]) -> dict[str, Any]:
    order = (await stack.client.post("/orders", json={"items": [LINE]}, headers=auth)).json()
    payment = await stack.client.get(f"/payments/{order['payment_id']}", headers=auth)
    return dict(payment.json())


async def test_refunds(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    completed = await paid_order(stack, alice)
    await stack.api.sql(
        "INSERT INTO payments (user_id, amount, status) VALUES (1, 5, 'failed'), (1, 5, 'pending')"
    )
    failed_id, pending_id = completed["id"] + 1, completed["id"] + 2

    refunded = await stack.client.post(f"/payments/{completed['id']}/refund", headers=alice)
    assert refunded.status_code == 200
    assert refunded.json()["status"] == "refunded"
    assert refunded.json()["refunded_at"] is not None
    assert refunded.json()["amount"] == completed["amount"]

    again = await stack.client.post(f"/payments/{completed['id']}/refund", headers=alice)
    assert again.status_code == 400
    assert again.json() == {
        "detail": "only a completed payment can be refunded; this one is refunded"
    }
    declined = await stack.client.post(f"/payments/{failed_id}/refund", headers=alice)
    assert declined.status_code == 400
    assert "this one is failed" in declined.json()["detail"]
    pending = await stack.client.post(f"/payments/{pending_id}/refund", headers=alice)
    assert pending.status_code == 400

    # Bob can neither see nor refund Alice's payments; a retried refund changes nothing.
    bob = await register(stack.client, "bob")
    other = await stack.client.post(f"/payments/{completed['id']}/refund", headers=bob)
    assert other.status_code == 404
    statuses = await stack.api.sql("SELECT status FROM payments ORDER BY id")
    assert [row[0] for row in statuses] == ["refunded", "failed", "pending"]
    assert (await stack.client.post("/payments/999/refund", headers=alice)).status_code == 404


async def test_a_retried_refund_is_answered_not_redone(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    paid = await paid_order(stack, alice)
    keyed = {**alice, "Idempotency-Key": "refund-1"}
    first = await stack.client.post(f"/payments/{paid['id']}/refund", headers=keyed)
    retry = await stack.client.post(f"/payments/{paid['id']}/refund", headers=keyed)
    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"


async def test_concurrent_refunds_refund_once(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    paid = await paid_order(stack, alice)
    responses = await asyncio.gather(
        *(stack.client.post(f"/payments/{paid['id']}/refund", headers=alice) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [200, 400, 400, 400, 400]


async def test_own_payments_only(stack: Stack) -> None:
    alice = await register(stack.client, "alice")
    bob = await register(stack.client, "bob")
    mine = [await paid_order(stack, alice) for _ in range(3)]
    bobs = await paid_order(stack, bob)

    listed = await stack.client.get("/payments", headers=alice)
    assert [p["id"] for p in listed.json()] == [p["id"] for p in mine]
    page = await stack.client.get("/payments?skip=1&limit=1", headers=alice)
    assert [p["id"] for p in page.json()] == [mine[1]["id"]]
    assert (await stack.client.get(f"/payments/{mine[0]['id']}", headers=alice)).json() == (mine[0])
    theirs = await stack.client.get(f"/payments/{bobs['id']}", headers=alice)
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": f"payment {bobs['id']} not found"}
    assert [p["id"] for p in (await stack.client.get("/payments", headers=bob)).json()] == [
        bobs["id"]
    ]
    assert (await stack.client.get("/payments")).status_code == 401
    assert Decimal(mine[0]["amount"]) == Decimal("59.98")
