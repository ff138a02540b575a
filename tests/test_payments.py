"""Payments: the simulated processor, idempotent charges, refunds, own payments only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from app.core.settings import Settings
from app.payments import processor
from tests.conftest import Api, running_app
from tests.servers import CacheServer, PostgresServer
from tests.stack import seed_001_settings, token_for

ALICE, BOB = 1, 2


@pytest.fixture
def payments_settings(pg: PostgresServer, cache_server: CacheServer) -> Settings:
    return seed_001_settings(pg, cache_server)


@pytest.fixture
async def payments(payments_settings: Settings) -> AsyncIterator[Api]:
    """The payments service alone: it trusts tokens signed with the shared secret."""
    async with running_app(payments_settings, domains=["payments"]) as running:
        yield running


def key_with(outcome: bool, settings: Settings, user_id: int = ALICE) -> str:
    """An idempotency key the processor accepts (``outcome``) or declines for the user."""
    for n in range(1000):
        key = f"key-{n}"
        accepted = processor.accepts(
            settings.payment_seed, user_id, key, settings.payment_success_rate
        )
        if accepted == outcome:
            return key
    raise AssertionError("no such key in 1000")


async def charge(
    api: Api, settings: Settings, user_id: int = ALICE, key: str | None = None, **body: Any
) -> Any:
    headers = token_for(user_id, settings)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await api.client.post("/payments", json={"amount": "10.00", **body}, headers=headers)


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
    accepted = await charge(payments, payments_settings, key=key_with(True, payments_settings))
    assert accepted.status_code == 201, accepted.text
    body = accepted.json()
    assert body["status"] == "completed"
    assert body["amount"] == "10.00"
    assert body["user_id"] == ALICE
    assert body["transaction_id"].startswith("txn_")
    assert body["failure_reason"] is None

    declined = await charge(payments, payments_settings, key=key_with(False, payments_settings))
    assert declined.status_code == 201
    assert declined.json()["status"] == "failed"
    assert declined.json()["failure_reason"] == "declined by the processor (simulated)"
    assert declined.json()["transaction_id"] is None

    # Without any key, each charge is a payment of its own (decided on its id).
    first = await charge(payments, payments_settings)
    second = await charge(payments, payments_settings)
    assert first.json()["id"] != second.json()["id"]
    assert await payments.count("payments") == 4


async def test_success_rate_setting(payments_settings: Settings) -> None:
    for rate, expected in ((1.0, "completed"), (0.0, "failed")):
        settings = payments_settings.model_copy(update={"payment_success_rate": rate})
        async with running_app(settings, domains=["payments"]) as api:
            statuses = {(await charge(api, settings)).json()["status"] for _ in range(5)}
            assert statuses == {expected}


async def test_a_retried_charge_is_not_charged_twice(
    payments: Api, payments_settings: Settings
) -> None:
    key = key_with(True, payments_settings)
    first = await charge(payments, payments_settings, key=key, order_id=7)
    again = await charge(payments, payments_settings, key=key, order_id=7)
    assert first.status_code == 201
    assert again.status_code == 200  # the payment the first attempt made
    assert again.json() == first.json()
    # The order id is a key of its own when no header is sent.
    by_order = await charge(payments, payments_settings, order_id=8)
    by_order_again = await charge(payments, payments_settings, order_id=8)
    assert (by_order.status_code, by_order_again.status_code) == (201, 200)
    assert by_order_again.json()["id"] == by_order.json()["id"]
    assert await payments.count("payments") == 2

    # Keys are per user: Bob's "same" key is his own payment.
    bobs = await charge(payments, payments_settings, user_id=BOB, key=key, order_id=7)
    assert bobs.status_code == 201
    assert bobs.json()["id"] != first.json()["id"]


async def test_concurrent_retries_make_one_payment(
    payments: Api, payments_settings: Settings
) -> None:
    responses = await asyncio.gather(
        *(charge(payments, payments_settings, key="same-key") for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.json()["status"] for r in responses}) == 1
    assert await payments.count("payments") == 1


async def test_a_key_reused_for_another_charge_is_409(
    payments: Api, payments_settings: Settings
) -> None:
    await charge(payments, payments_settings, key="k1", order_id=1)
    other_amount = await charge(payments, payments_settings, key="k1", order_id=1, amount="11")
    other_order = await charge(payments, payments_settings, key="k1", order_id=2)
    assert other_amount.status_code == other_order.status_code == 409
    assert await payments.count("payments") == 1


async def test_a_pending_payment_is_finished_by_the_retry(
    payments: Api, payments_settings: Settings
) -> None:
    """The process died after recording the charge: the retry completes it, once."""
    key = key_with(True, payments_settings)
    await payments.sql(
        "INSERT INTO payments (user_id, idempotency_key, amount, status) "
        "VALUES (:user, :key, 10, 'pending')",
        user=ALICE,
        key=key,
    )
    retry = await charge(payments, payments_settings, key=key)
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
    response = await charge(payments, payments_settings, amount=amount)
    assert response.status_code == 422, response.text
    assert reason in response.text
    assert await payments.count("payments") == 0


async def test_other_bad_charges(payments: Api, payments_settings: Settings) -> None:
    auth = token_for(ALICE, payments_settings)
    bad = [
        ({"amount": "1"}, {"Idempotency-Key": ""}),
        ({"amount": "1"}, {"Idempotency-Key": "k" * 256}),
        ({"amount": "1"}, {"Idempotency-Key": "has space"}),
        ({"amount": "1", "order_id": 0}, {}),
        ({"amount": "1", "status": "completed"}, {}),  # no setting one's own status
        ({}, {}),
    ]
    for body, headers in bad:
        response = await payments.client.post("/payments", json=body, headers={**auth, **headers})
        assert response.status_code == 422, (body, headers, response.text)
    assert (await payments.client.post("/payments", json={"amount": "1"})).status_code == 401
    assert await payments.count("payments") == 0


async def test_refunds(payments: Api, payments_settings: Settings) -> None:
    auth = token_for(ALICE, payments_settings)
    completed = (
        await charge(payments, payments_settings, key=key_with(True, payments_settings))
    ).json()
    failed = (
        await charge(payments, payments_settings, key=key_with(False, payments_settings))
    ).json()

    refunded = await payments.client.post(f"/payments/{completed['id']}/refund", headers=auth)
    assert refunded.status_code == 200
    assert refunded.json()["status"] == "refunded"
    assert refunded.json()["refunded_at"] is not None
    assert refunded.json()["amount"] == completed["amount"]

    again = await payments.client.post(f"/payments/{completed['id']}/refund", headers=auth)
    assert again.status_code == 400
    assert again.json() == {
        "detail": "only a completed payment can be refunded; this one is refunded"
    }
    declined = await payments.client.post(f"/payments/{failed['id']}/refund", headers=auth)
    assert declined.status_code == 400
    assert "this one is failed" in declined.json()["detail"]

    await payments.sql(
        "INSERT INTO payments (user_id, amount, status) VALUES (:user, 5, 'pending')", user=ALICE
    )
    pending_id = (await payments.sql("SELECT max(id) FROM payments"))[0][0]
    pending = await payments.client.post(f"/payments/{pending_id}/refund", headers=auth)
    assert pending.status_code == 400

    # Bob can neither see nor refund Alice's payments; a retried refund changes nothing.
    bob = token_for(BOB, payments_settings)
    other = await payments.client.post(f"/payments/{completed['id']}/refund", headers=bob)
    assert other.status_code == 404
    statuses = await payments.sql("SELECT status FROM payments ORDER BY id")
    assert [row[0] for row in statuses] == ["refunded", "failed", "pending"]
    assert (await payments.client.post("/payments/999/refund", headers=auth)).status_code == 404


async def test_concurrent_refunds_refund_once(payments: Api, payments_settings: Settings) -> None:
    auth = token_for(ALICE, payments_settings)
    paid = (await charge(payments, payments_settings, key=key_with(True, payments_settings))).json()
    responses = await asyncio.gather(
        *(payments.client.post(f"/payments/{paid['id']}/refund", headers=auth) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [200, 400, 400, 400, 400]


async def test_own_payments_only(payments: Api, payments_settings: Settings) -> None:
    alice = token_for(ALICE, payments_settings)
    bob = token_for(BOB, payments_settings)
    mine = [(await charge(payments, payments_settings)).json() for _ in range(3)]
    bobs = (await charge(payments, payments_settings, user_id=BOB)).json()

    listed = await payments.client.get("/payments", headers=alice)
    assert [p["id"] for p in listed.json()] == [p["id"] for p in mine]
    page = await payments.client.get("/payments?skip=1&limit=1", headers=alice)
    assert [p["id"] for p in page.json()] == [mine[1]["id"]]
    assert (await payments.client.get(f"/payments/{mine[0]['id']}", headers=alice)).json() == (
        mine[0]
    )
    theirs = await payments.client.get(f"/payments/{bobs['id']}", headers=alice)
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": f"payment {bobs['id']} not found"}
    assert [p["id"] for p in (await payments.client.get("/payments", headers=bob)).json()] == [
        bobs["id"]
    ]
    assert (await payments.client.get("/payments")).status_code == 401
    assert Decimal(mine[0]["amount"]) == Decimal("10")
