"""Every request seed 001 documents, typed as its document shows it, through the gateway.

Each curl command below is the seed's, with `localhost` swapped for the sandbox's address
(and `-k` kept where the seed has it, for the self-signed certificate), run by the curl of
the machine running the checks, once through plain http (:80) and once through https (:443).
The one other change: the seed pays "order_id": 1, the first order of a fresh database; here
it is the id of the order the example has just placed (other checks place orders too).
"""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

# Accounts the examples register; removed before each run, so the checks can run again.
SEED_USERS = ("testuser", "demo")


def curl(command: str, base: str) -> tuple[int, str]:
    """Run one of the seed's curl commands against ``base``; the status and the body."""
    argv = shlex.split(command.replace("http://localhost", base).replace("https://localhost", base))
    assert argv[0] == "curl"
    # Only what makes the output machine-readable: silent, the status on the last line.
    result = subprocess.run(
        [*argv, "-sS", "-k", "-w", "\n%{http_code}", "--max-time", "30"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


@pytest.fixture(params=["http", "https"])
def base(request, host, address) -> str:
    # A fresh start for the seed's accounts: its examples register fixed names.
    # Each service has its own database: the accounts' ids first, then their orders and
    # payments in the databases of those services.
    names = ", ".join(f"'{name}'" for name in SEED_USERS)
    with host.sudo("postgres"):
        query = f"SELECT string_agg(id::text, ',') FROM users WHERE username IN ({names})"
        ids = host.check_output("psql -XAtq -d user_db -c " + shlex.quote(query)).strip()
        for database, table in (("payment_db", "payments"), ("order_db", "orders")):
            if ids:
                host.check_output(
                    f"psql -XAtq -d {database} -c "
                    + shlex.quote(f"DELETE FROM {table} WHERE user_id IN ({ids})")
                )
        host.check_output(
            "psql -XAtq -d user_db -c "
            + shlex.quote(f"DELETE FROM users WHERE username IN ({names})")
        )
    return f"{request.param}://{address}"


def test_testing_the_api(base):
    """ "Testing the API": register, login, place an order."""
    status, body = curl(
        """curl -X POST "http://localhost/users/register" \
          -H "Content-Type: application/json" \
          -d '{
            "username": "testuser",
            "email": "test@example.com",
            "password": "testpass123"
          }'""",
        base,
    )
    assert status == 201, body
    status, body = curl(
        """curl -X POST "http://localhost/users/login" \
          -H "Content-Type: application/json" \
          -d '{
            "username": "testuser",
            "password": "testpass123"
          }'""",
        base,
    )
    assert status == 200, body
    token = json.loads(body)["access_token"]
    status, body = curl(
        """curl -X POST "http://localhost/orders" \
          -H "Content-Type: application/json" \
          -H "Authorization: Bearer YOUR_JWT_TOKEN" \
          -d '{
            "items": [
              {"name": "Product 1", "quantity": 2, "price": 29.99},
              {"name": "Product 2", "quantity": 1, "price": 49.99}
            ]
          }'""".replace("YOUR_JWT_TOKEN", token),
        base,
    )
    assert status == 201, body
    order = json.loads(body)
    assert order["total_amount"] == "109.97"
    assert [line["product_name"] for line in order["items"]] == ["Product 1", "Product 2"]


def test_api_testing_with_curl(base):
    """ "API Testing with curl": health, register, login by e-mail, order, payment."""
    status, body = curl("curl http://localhost/health", base)
    assert status == 200, body
    status, body = curl(
        """curl -X POST http://localhost/users \
          -H "Content-Type: application/json" \
          -d '{
            "email": "demo@example.com",
            "username": "demo",
            "full_name": "Demo User",
            "password": "password123"
          }'""",
        base,
    )
    assert status == 201, body
    assert json.loads(body)["full_name"] == "Demo User"
    status, body = curl(
        """curl -X POST http://localhost/users/login \
          -H "Content-Type: application/json" \
          -d '{
            "email": "demo@example.com",
            "password": "password123"
          }'""",
        base,
    )
    assert status == 200, body
    token = json.loads(body)["access_token"]
    status, body = curl(
        """curl -X POST http://localhost/orders \
          -H "Content-Type: application/json" \
          -H "Authorization: Bearer $TOKEN" \
          -d '{
            "items": [
              {"name": "Product 1", "quantity": 2, "price": 29.99}
            ],
            "total_amount": 59.98
          }'""".replace("$TOKEN", token),
        base,
    )
    assert status == 201, body
    order = json.loads(body)
    assert order["total_amount"] == "59.98"
    status, body = curl(
        """curl -X POST http://localhost/payments \
          -H "Content-Type: application/json" \
          -H "Authorization: Bearer $TOKEN" \
          -d '{
            "order_id": 1,
            "amount": 59.98,
            "payment_method": "credit_card"
          }'""".replace("$TOKEN", token).replace('"order_id": 1', f'"order_id": {order["id"]}'),
        base,
    )
    assert status in (200, 201), body
    payment = json.loads(body)
    assert payment["order_id"] == order["id"]
    assert payment["amount"] == "59.98"
    assert payment["payment_method"] == "credit_card"
    assert payment["status"] in ("completed", "failed")


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/", None),
        ("/users/docs", None),
        ("/orders/docs", None),
        ("/payments/docs", None),
        ("/user-docs", "/users/docs"),
        ("/order-docs", "/orders/docs"),
        ("/payment-docs", "/payments/docs"),
    ],
)
def test_browser_access(base, path, target):
    """ "Browser Access": the overview and each service's docs, at both addresses."""
    status, body = curl(f"curl -L http://localhost{path}", base)
    assert status == 200, body
    assert "<html" in body.lower()
    if target is not None:
        result = subprocess.run(
            ["curl", "-sS", "-k", "-o", "/dev/null", "-w", "%{redirect_url}", f"{base}{path}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout == f"{base}{target}", result.stdout


def test_ssl_testing(address):
    """ "SSL Testing": https on the overview and health, TLS 1.2, openssl's handshake."""
    base = f"https://{address}"
    assert curl("curl -k https://localhost/", base)[0] == 200
    assert curl("curl -k --tlsv1.2 https://localhost/health", base)[0] == 200
    handshake = subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:443", "-servername", address, "-brief"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "CONNECTION ESTABLISHED" in handshake.stderr, handshake.stderr
    assert "Protocol version: TLSv1.3" in handshake.stderr
