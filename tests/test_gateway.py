"""One codebase as separate services: docs under their prefix, calls between them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from devservers import CacheServer, PostgresServer
from tests.stack import (
    PASSWORD,
    register,
    reset,
    seed_001_settings,
    serve,
    socket_client,
    socket_dir,
)

SERVICES = ("users", "orders", "payments")


async def check_docs(client: httpx.AsyncClient, prefix: str, docs: str, openapi: str) -> Any:
    """``docs`` loads ``{prefix}/openapi.json``, and ``openapi`` answers it."""
    page = await client.get(docs)
    assert page.status_code == 200
    assert f"url: '{prefix}/openapi.json'" in page.text
    redoc = await client.get(docs.replace("docs", "redoc"))
    assert f'spec-url="{prefix}/openapi.json"' in redoc.text
    schema = await client.get(openapi)
    assert schema.status_code == 200
    body = schema.json()
    # The paths are the public ones: "Try it out" sends them as they are.
    assert "servers" not in body
    return body


async def test_a_service_docs_work_under_its_prefix(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    settings = seed_001_settings(pg, cache_server, domains=("users",), root_path="/users")
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            await reset(app, client)
            schema = await check_docs(client, "/users", "/users/docs", "/users/openapi.json")
            assert set(schema["paths"]) == {
                "/users/register",
                "/users/login",
                "/users/me",
                "/users",
                "/users/{user_id}",
                "/users/health",
            }
            auth = await register(client, "alice")
            # The collection and one user, at their public paths.
            listed = await client.get("/users", headers=auth)
            assert listed.status_code == 200
            assert [u["username"] for u in listed.json()] == ["alice"]
            assert (await client.get("/users/1", headers=auth)).status_code == 200
            assert (await client.get("/users/me", headers=auth)).json()["username"] == "alice"
            # Health under the prefix, and at /health for the checks of the socket.
            for path in ("/users/health", "/health"):
                assert (await client.get(path)).json()["status"] == "ok"
            # Nothing strips the prefix: the service answers its public paths only.
            assert (await client.get("/me", headers=auth)).status_code == 404


async def test_one_app_keeps_its_docs_at_the_root(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    settings = seed_001_settings(
        pg,
        cache_server,
        domains=("items", "notes", *SERVICES),
        users_url="http://127.0.0.1:8080",  # not called here
        payments_url="http://127.0.0.1:8080",
        orders_url="http://127.0.0.1:8080",
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            page = await client.get("/docs")
            assert "url: '/openapi.json'" in page.text
            schema = (await client.get("/openapi.json")).json()
            assert "servers" not in schema
            assert {"/users/register", "/orders", "/payments/{payment_id}/refund"} <= set(
                schema["paths"]
            )
            assert "/api/items" in schema["paths"]
            # /users/docs is no page of the single app.
            assert (await client.get("/users/docs")).status_code in (401, 404, 422)


async def services(
    stack: AsyncExitStack,
    pg: PostgresServer,
    cache: CacheServer,
    directory: Path,
    **overrides: Any,
) -> dict[str, httpx.AsyncClient]:
    """users, orders and payments, each its own app on its own socket, as nginx sees them."""
    sockets = {name: directory / f"{name}.sock" for name in SERVICES}
    clients: dict[str, httpx.AsyncClient] = {}
    for name in SERVICES:
        settings = seed_001_settings(
            pg,
            cache,
            domains=(name,),
            root_path=f"/{name}",
            # The orders service calls the others' sockets straight, with public paths.
            users_url=f"unix:{sockets['users']}",
            payments_url=f"unix:{sockets['payments']}",
            orders_url=f"unix:{sockets['orders']}",
            payment_success_rate=1.0,
            **overrides,
        )
        app = create_app(settings)
        await stack.enter_async_context(serve(app, sockets[name]))
        clients[name] = await stack.enter_async_context(socket_client(sockets[name]))
        if name == "users":
            await reset(app, clients[name])  # one database: empties every table
    return clients


@pytest.fixture
async def separate(
    pg: PostgresServer, cache_server: CacheServer
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    with socket_dir() as directory:
        async with AsyncExitStack() as stack:
            yield await services(stack, pg, cache_server, directory)


async def test_separate_services_place_pay_and_refund(
    separate: dict[str, httpx.AsyncClient],
) -> None:
    users, orders, payments = (separate[name] for name in SERVICES)
    alice = await register(users, "alice")
    line = {"name": "Product 1", "quantity": 2, "price": "29.99"}
    created = await orders.post("/orders", json={"items": [line]}, headers=alice)
    assert created.status_code == 201, created.text
    order = created.json()
    assert (order["status"], order["total"]) == ("confirmed", "59.98")
    payment = await payments.get(f"/payments/{order['payment_id']}", headers=alice)
    assert payment.json()["amount"] == "59.98"
    refunded = await payments.post(f"/payments/{order['payment_id']}/refund", headers=alice)
    assert refunded.json()["status"] == "refunded"
    assert [o["id"] for o in (await orders.get("/orders", headers=alice)).json()] == [order["id"]]
    # Each service answers only for its own domain.
    assert (await orders.get("/payments/1/refund", headers=alice)).status_code == 404
    assert (await users.get("/api/items")).status_code == 404

    for name, client in separate.items():
        await check_docs(client, f"/{name}", f"/{name}/docs", f"/{name}/openapi.json")


async def test_separate_services_pay_the_seed_way(
    separate: dict[str, httpx.AsyncClient],
) -> None:
    """payments asks the orders service for the order, with the user's token."""
    users, orders, payments = (separate[name] for name in SERVICES)
    alice = await register(users, "alice")
    form = await users.post(  # the docs' Authorize button: the OAuth2 password form
        "/users/login", data={"grant_type": "password", "username": "alice", "password": PASSWORD}
    )
    assert form.status_code == 200, form.text
    assert form.json()["token_type"] == "bearer"
    order = (
        await orders.post(
            "/orders", json={"items": [{"name": "P", "quantity": 1, "price": 5}]}, headers=alice
        )
    ).json()
    body = {"order_id": order["id"], "amount": 5, "payment_method": "credit_card"}
    paid = await payments.post("/payments", json=body, headers=alice)
    assert (paid.status_code, paid.json()["id"]) == (200, order["payment_id"])
    bob = await register(users, "bob")
    assert (await payments.post("/payments", json=body, headers=bob)).status_code == 404
    # Every service's docs log in at the users service.
    for name, client in separate.items():
        schema = (await client.get(f"/{name}/openapi.json")).json()
        schemes = schema.get("components", {}).get("securitySchemes", {})
        flows = [s["flows"]["password"]["tokenUrl"] for s in schemes.values() if "flows" in s]
        assert flows == ["/users/login"], (name, schemes)
        assert not any("internal" in path for path in schema["paths"]), name


async def test_a_gone_or_inactive_users_tokens_stop_working_everywhere(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    ttl = 0.3
    with socket_dir() as directory:
        async with AsyncExitStack() as stack:
            clients = await services(stack, pg, cache_server, directory, auth_cache_ttl=ttl)
            users, orders, payments = (clients[name] for name in SERVICES)
            alice = await register(users, "alice")
            bob = await register(users, "bob")
            line = {"name": "P", "quantity": 1, "price": 5}
            assert (await orders.post("/orders", json={"items": [line]}, headers=alice)).is_success
            for auth in (alice, bob):
                assert (await payments.get("/payments", headers=auth)).status_code == 200
            # Behind the services' backs: one account deleted, one deactivated.
            pg.psql("DELETE FROM users WHERE username = 'alice'", pg.database)
            pg.psql("UPDATE users SET is_active = false WHERE username = 'bob'", pg.database)
            await asyncio.sleep(ttl + 0.1)  # the services' cached answers expire
            checks = ((orders, "/orders"), (payments, "/payments"), (users, "/users/me"))
            for auth in (alice, bob):
                for client, path in checks:
                    response = await client.get(path, headers=auth)
                    assert response.status_code == 401, (path, response.text)
                    assert response.json() == {"detail": "unknown user"}
            login = {"username": "bob", "password": PASSWORD}
            assert (await users.post("/users/login", json=login)).status_code == 401
