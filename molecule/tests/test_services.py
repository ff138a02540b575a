"""The seed-001 services as separate units behind nginx: the whole user journey on :8080."""

from __future__ import annotations

import uuid

import httpx
import pytest

SERVICES = ("users", "orders", "payments")


@pytest.fixture(scope="module")
def gateway(host):
    address = host.ansible.get_variables()["ansible_host"]
    with httpx.Client(base_url=f"http://{address}:8080", timeout=30) as client:
        yield client


def register_and_login(gateway) -> dict[str, str]:
    name = f"u{uuid.uuid4().hex[:10]}"
    password = f"Verify-{uuid.uuid4().hex[:12]}"
    body = {"username": name, "email": f"{name}@example.com", "password": password}
    assert gateway.post("/users/register", json=body).status_code == 201
    assert gateway.post("/users/register", json=body).status_code == 409  # duplicate
    token = gateway.post("/users/login", json={"username": name, "password": password})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_its_own_unit(host, service):
    for unit in (f"webstack-{service}.socket", f"webstack-{service}.service"):
        assert host.service(unit).is_enabled, unit
        assert host.service(unit).is_running, unit
    sock = host.file(f"/run/webstack/{service}.sock")
    assert (sock.user, sock.group, sock.mode) == ("webstack", "www-data", 0o660)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_docs_work_through_the_gateway(gateway, service):
    docs = gateway.get(f"/{service}/docs")
    assert docs.status_code == 200
    assert f"/{service}/openapi.json" in docs.text
    spec = gateway.get(f"/{service}/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["paths"], f"{service} publishes no paths"


@pytest.mark.parametrize("path", ["/metrics", "/users/metrics", "/orders/metrics"])
def test_metrics_are_not_public(gateway, path):
    assert gateway.get(path).status_code == 404


def test_metrics_answer_on_the_socket(host, gateway):
    gateway.get("/users/docs")
    with host.sudo("www-data"):
        metrics = host.check_output(
            "curl -sS --unix-socket /run/webstack/users.sock http://localhost/users/metrics"
        )
    assert "http_requests_total" in metrics or "_total{" in metrics


def test_register_login_order_pay_refund(gateway):
    auth = register_and_login(gateway)
    me = gateway.get("/users/me", headers=auth)
    assert me.status_code == 200
    user_id = me.json()["id"]

    # The simulated processor declines a share of charges: place orders until one is paid.
    line = {"name": "Product 1", "quantity": 2, "price": "29.99"}
    order = None
    for _ in range(12):
        placed = gateway.post("/orders", json={"items": [line]}, headers=auth)
        assert placed.status_code == 201, placed.text
        assert placed.json()["total"] == "59.98"  # computed by the server
        if placed.json()["status"] == "confirmed":
            order = placed.json()
            break
    assert order is not None, "no order was confirmed in 12 tries"
    assert order["user_id"] == user_id

    payment = gateway.get(f"/payments/{order['payment_id']}", headers=auth)
    assert payment.status_code == 200
    assert payment.json()["status"] == "completed"
    assert payment.json()["order_id"] == order["id"]

    refunded = gateway.post(f"/payments/{order['payment_id']}/refund", headers=auth)
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["status"] == "refunded"
    assert gateway.post(f"/payments/{order['payment_id']}/refund", headers=auth).status_code == 400

    # Another user sees none of it.
    other = register_and_login(gateway)
    assert gateway.get(f"/orders/{order['id']}", headers=other).status_code == 404
    assert gateway.get(f"/payments/{order['payment_id']}", headers=other).status_code == 404


def test_no_token_no_orders(gateway):
    assert gateway.get("/orders").status_code == 401
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."}
    assert gateway.get("/orders", headers=forged).status_code == 401
