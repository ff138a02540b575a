"""Every service's OpenAPI schema says what its server does: schemathesis, in-process.

Each service's app is served over ASGI with a real PostgreSQL and Valkey behind it (and
the real services it calls), and every operation of its schema goes through the checks of
tests/openapi_checks.py. molecule/tests/test_openapi_gateway.py runs the same checks
through nginx on a deployed host.

To cover a new service or operation, add it to SERVICES; the operations are found in the
schema itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from schemathesis.python.asgi import get_client, shutdown_lifespans

from app.core.auth import issue_token
from app.main import create_app
from devservers import CacheServer, GunicornServer, PostgresServer, clean_env
from tests.openapi_checks import check_schema, report
from tests.stack import FAST_HASHES, JWT_SECRET, PASSWORD, SEED_001, seed_001_settings

SERVICES: dict[str, tuple[str, ...]] = {
    "catalog": ("items", "notes"),
    "users": ("users",),
    "orders": ("orders",),
    "payments": ("payments",),
}


@pytest.fixture(scope="module")
def _lifespans() -> Iterator[None]:
    yield
    shutdown_lifespans()  # the apps schemathesis started, with their pools


@contextlib.contextmanager
def services_it_calls(pg: PostgresServer, cache: CacheServer, database: str) -> Iterator[str]:
    """Users, orders and payments as one app under Gunicorn (one worker) on the same
    database: the real services the one under test calls. Yields their address."""
    hashes = {f"APP_{name.upper()}": str(value) for name, value in FAST_HASHES.items()}
    env = clean_env(
        **pg.env(database),
        **cache.env(db=3),
        **hashes,
        APP_DOMAINS=",".join(SEED_001),
        APP_JWT_SECRET=JWT_SECRET,
        APP_PAYMENT_SUCCESS_RATE="1",
        OTEL_TRACES_EXPORTER="none",
    )
    server = GunicornServer(env, workers=1)
    own = f"unix:{server.socket}"
    server.env.update(APP_USERS_URL=own, APP_ORDERS_URL=own, APP_PAYMENTS_URL=own)
    try:
        server.start()
        yield own
    finally:
        server.cleanup()


def register(client: httpx.Client) -> int:
    """A real account (so that tokens of it pass the user check); its id."""
    body = {"email": "st@example.com", "username": "schemathesis", "password": PASSWORD}
    registered = client.post("/users/register", json=body)
    assert registered.status_code == 201, registered.text
    return int(registered.json()["id"])


@pytest.mark.usefixtures("_lifespans")
@pytest.mark.parametrize("service", SERVICES)
def test_the_schema_says_what_the_server_does(
    service: str, pg: PostgresServer, cache_server: CacheServer
) -> None:
    domains = SERVICES[service]
    database = pg.create_database()
    with contextlib.ExitStack() as stack:
        # Orders and payments check tokens at the users service and call each other: real
        # ones, so that their answers are the real ones, not a 503 for every request.
        calls_others = service in ("orders", "payments")
        if calls_others:
            peers = stack.enter_context(services_it_calls(pg, cache_server, database))
        else:
            peers = "unix:/nonexistent.sock"  # the users and catalog services call nobody
        app_settings = seed_001_settings(
            pg,
            cache_server,
            database,
            cache_db=3,
            users_url=peers,
            payments_url=peers,
            orders_url=peers,
        )
        app = create_app(app_settings, domains)
        if calls_others:
            transport = httpx.HTTPTransport(uds=peers.removeprefix("unix:"))
            with httpx.Client(transport=transport, base_url="http://peers") as client:
                user_id = register(client)
                # Order 1, which the example of POST /payments pays (app/payments/schemas.py).
                auth, _ = issue_token(user_id, app_settings)
                line = {"product_name": "Widget", "quantity": 2, "price": "29.99"}
                order = client.post(
                    "/orders", json={"items": [line]}, headers={"Authorization": f"Bearer {auth}"}
                )
                assert order.status_code == 201, order.text
                assert order.json()["id"] == 1, order.text
        elif "users" in domains:
            with get_client(app) as client:
                user_id = register(client)
        else:
            user_id = 1  # the catalog takes no token
        token, _ = issue_token(user_id, app_settings)
        headers = {"Authorization": f"Bearer {token}"}

        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations, findings = check_schema(schema, headers)

    assert len(operations) >= 2
    assert not findings, report(findings)
