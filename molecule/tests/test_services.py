"""The seed-001 services as separate units behind nginx: the whole user journey on :8080."""

from __future__ import annotations

import uuid

import pytest
from conftest import assert_units_active, wait_for_spans

SERVICES = ("users", "orders", "payments")
SERVER, CLIENT = 2, 3  # OTLP's span kinds


def register_and_login(api) -> dict[str, str]:
    name = f"u{uuid.uuid4().hex[:10]}"
    password = f"Verify-{uuid.uuid4().hex[:12]}"
    body = {"username": name, "email": f"{name}@example.com", "password": password}
    assert api.post("/users/register", json=body).status_code == 201
    assert api.post("/users/register", json=body).status_code == 409  # duplicate
    token = api.post("/users/login", json={"username": name, "password": password})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_its_own_unit(host, service):
    assert_units_active(host, f"webstack-{service}.socket", f"webstack-{service}.service")
    sock = host.file(f"/run/webstack/{service}.sock")
    assert (sock.user, sock.group, sock.mode) == (f"webstack-{service}", "www-data", 0o660)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_docs_work_through_the_gateway(api, service):
    docs = api.get(f"/{service}/docs")
    assert docs.status_code == 200
    assert f"/{service}/openapi.json" in docs.text
    spec = api.get(f"/{service}/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["paths"], f"{service} publishes no paths"


@pytest.mark.parametrize("path", ["/metrics", "/users/metrics", "/orders/metrics"])
def test_metrics_are_not_public(api, path):
    assert api.get(path).status_code == 404


def test_metrics_answer_on_the_socket(host, api):
    api.get("/users/docs")
    with host.sudo("www-data"):
        metrics = host.check_output(
            "curl -sS --unix-socket /run/webstack/users.sock http://localhost/users/metrics"
        )
    assert "http_requests_total" in metrics or "_total{" in metrics


def test_register_login_order_pay_refund(api):
    auth = register_and_login(api)
    me = api.get("/users/me", headers=auth)
    assert me.status_code == 200
    user_id = me.json()["id"]

    # The simulated processor declines a share of charges: place orders until one is paid.
    line = {"name": "Product 1", "quantity": 2, "price": "29.99"}
    order = None
    for _ in range(12):
        placed = api.post("/orders", json={"items": [line]}, headers=auth)
        assert placed.status_code == 201, placed.text
        assert placed.json()["total"] == "59.98"  # computed by the server
        if placed.json()["status"] == "confirmed":
            order = placed.json()
            break
    assert order is not None, "no order was confirmed in 12 tries"
    assert order["user_id"] == user_id

    payment = api.get(f"/payments/{order['payment_id']}", headers=auth)
    assert payment.status_code == 200
    assert payment.json()["status"] == "completed"
    assert payment.json()["order_id"] == order["id"]

    refunded = api.post(f"/payments/{order['payment_id']}/refund", headers=auth)
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["status"] == "refunded"
    assert api.post(f"/payments/{order['payment_id']}/refund", headers=auth).status_code == 400

    # Another user sees none of it.
    other = register_and_login(api)
    assert api.get(f"/orders/{order['id']}", headers=other).status_code == 404
    assert api.get(f"/payments/{order['payment_id']}", headers=other).status_code == 404


def test_no_token_no_orders(api):
    assert api.get("/orders").status_code == 401
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."}
    assert api.get("/orders", headers=forged).status_code == 401


def test_an_order_is_one_trace_across_the_services(host, api):
    # The client starts the trace (a W3C traceparent through nginx), so its spans are found
    # in the collector's file sink by their trace id: the order on the orders service, its
    # call to payments, and the charge on the payments service, parent to child.
    auth = register_and_login(api)
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    line = {"name": "Product 1", "quantity": 1, "price": "1.00"}
    headers = {**auth, "traceparent": f"00-{trace_id}-{caller}-01"}
    assert api.post("/orders", json={"items": [line]}, headers=headers).status_code == 201

    def one(spans, service, kind, name):
        found = [
            span
            for span in spans
            if (span["service"], span.get("kind"), span["name"])
            == (f"webstack-{service}", kind, name)
            and span["traceId"] == trace_id
        ]
        return found[0] if len(found) == 1 else None

    def chain(spans):
        order = one(spans, "orders", SERVER, "POST /orders")
        # The HTTP call to payments (the SQL and cache spans are of kind CLIENT too).
        call = one(spans, "orders", CLIENT, "POST")
        charge = one(spans, "payments", SERVER, "POST /payments/internal/charges")
        return (order, call, charge) if order and call and charge else None

    order, call, charge = chain(
        wait_for_spans(host, trace_id, chain, "the order's spans on orders and payments")
    )
    assert order["parentSpanId"] == caller
    assert call["parentSpanId"] == order["spanId"]
    assert charge["parentSpanId"] == call["spanId"]
