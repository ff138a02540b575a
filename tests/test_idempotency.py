"""Exactly-once writes: Idempotency-Key replays, scopes, waits, expiry, and killed workers.

The first tests run the app in-process; the last ones run it under a real Gunicorn and
SIGKILL its worker in the middle of a POST, before and after the commit, then resend the
request with the same key, as nginx's ``proxy_next_upstream`` does. The moments are
chosen with real components: a table lock the test holds (before the commit), a frozen
Valkey the worker waits on after committing, a trigger that waits on the test's
advisory lock (an order between its charge and its status update).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.core.idempotency import purge_expired
from app.core.settings import DatabaseSettings
from app.core.state import state_of
from devservers import CacheServer, GunicornServer, PostgresServer, clean_env
from tests.apps import Api, until
from tests.stack import JWT_SECRET, register

KEY = {"Idempotency-Key": "4f0c1a9e2b7d4c3e8a6f5d2c1b0a9e8f"}  # what nginx's $request_id is


async def post_item(api: Api, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return await api.client.post("/api/items", json=body, headers=headers or {})


async def test_a_repeated_post_is_answered_not_redone(api: Api) -> None:
    first = await post_item(api, {"name": "once"}, KEY)
    again = await post_item(api, {"name": "once"}, KEY)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await api.count("items") == 1
    # Without a key every request is its own write, as before.
    await post_item(api, {"name": "twice"})
    await post_item(api, {"name": "twice"})
    assert await api.count("items") == 3
    # And the cache heard of the write (the list shows it).
    assert len((await api.client.get("/api/items")).json()) == 3


async def test_a_key_reused_for_another_request_is_422(api: Api) -> None:
    await post_item(api, {"name": "first"}, KEY)
    other = await post_item(api, {"name": "second"}, KEY)
    assert other.status_code == 422
    detail = other.json()["detail"][0]
    assert detail["loc"] == ["header", "Idempotency-Key"]
    assert "used for a different request" in detail["msg"]
    other_path = await api.client.patch("/api/items/1", json={"name": "x"}, headers=KEY)
    assert other_path.status_code == 200  # another route: another scope
    wrong_target = await api.client.patch("/api/items/2", json={"name": "x"}, headers=KEY)
    assert wrong_target.status_code == 422  # same route, other path parameters
    assert [row[0] for row in await api.sql("SELECT name FROM items")] == ["x"]


async def test_keys_are_per_route_and_errors_are_not_kept(api: Api) -> None:
    note = await api.client.post("/api/notes", json={"title": "t", "content": "c"}, headers=KEY)
    item = await post_item(api, {"name": "i"}, KEY)
    assert (note.status_code, item.status_code) == (201, 201)
    assert "idempotent-replayed" not in item.headers
    # A refused request writes nothing, its key included: the corrected one runs.
    key = {"Idempotency-Key": "retry-after-422"}
    assert (await post_item(api, {"name": ""}, key)).status_code == 422
    assert (await post_item(api, {"name": "fixed"}, key)).status_code == 201
    assert (await api.client.delete("/api/items/99", headers=key)).status_code == 404
    assert await api.count("idempotency_keys") == 3


async def test_patch_and_delete_replay(api: Api) -> None:
    await post_item(api, {"name": "a"})
    patch = {"Idempotency-Key": "p1"}
    first = await api.client.patch("/api/items/1", json={"description": "d"}, headers=patch)
    await api.client.patch("/api/items/1", json={"description": "changed since"})
    again = await api.client.patch("/api/items/1", json={"description": "d"}, headers=patch)
    assert again.json() == first.json()  # the first answer, not a second update
    assert (await api.client.get("/api/items/1")).json()["description"] == "changed since"
    delete = {"Idempotency-Key": "d1"}
    gone = await api.client.delete("/api/items/1", headers=delete)
    retry = await api.client.delete("/api/items/1", headers=delete)
    assert (gone.status_code, retry.status_code) == (204, 204)  # not a 404 for the retry
    assert retry.headers["idempotent-replayed"] == "true"
    assert (await api.client.delete("/api/items/1")).status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        [("Idempotency-Key", "k" * 256)],
        [("Idempotency-Key", b"caf\xc3\xa9")],
        [("Idempotency-Key", "tab\there")],
        [("Idempotency-Key", "one"), ("Idempotency-Key", "two")],
    ],
)
async def test_malformed_keys_are_422(api: Api, headers: list[tuple[str, Any]]) -> None:
    response = await api.client.post("/api/items", json={"name": "x"}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await api.count("items") == 0
    # Printable ASCII, spaces included, up to 255 characters is fine.
    ok = {"Idempotency-Key": "a key with spaces " + "k" * 237}
    assert (await post_item(api, {"name": "x"}, ok)).status_code == 201


async def test_an_empty_key_is_no_key(api: Api) -> None:
    # As behind nginx, which cannot tell an empty header from none: each write is its own.
    empty = {"Idempotency-Key": ""}
    first = await post_item(api, {"name": "x"}, empty)
    again = await post_item(api, {"name": "x"}, empty)
    assert (first.status_code, again.status_code) == (201, 201)
    assert "idempotent-replayed" not in again.headers
    assert await api.count("items") == 2


async def test_expired_keys_are_free_again_and_purged(api: Api) -> None:
    await post_item(api, {"name": "old"}, KEY)
    ttl = state_of(api.app).settings.idempotency_ttl
    await api.sql(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(secs => :ttl + 1)",
        ttl=ttl,
    )
    again = await post_item(api, {"name": "old"}, KEY)
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert await api.count("items") == 2
    await post_item(api, {"name": "other"}, {"Idempotency-Key": "k2"})
    await api.sql(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(secs => :ttl + 1) "
        "WHERE key = 'k2'",
        ttl=ttl,
    )
    assert await purge_expired(state_of(api.app).sessions, ttl) == 1
    assert [row[0] for row in await api.sql("SELECT key FROM idempotency_keys")] == [
        KEY["Idempotency-Key"]
    ]


class Db:
    """SQL behind the app's back, on an engine of the test's own or the app's."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def sql(self, statement: str, **params: Any) -> list[Any]:
        async with self.engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []

    async def count(self, table: str) -> int:
        return int((await self.sql(f"SELECT count(*) FROM {table}"))[0][0])

    async def waiting(self, kind: str) -> int:
        """Backends waiting for a lock of this kind (relation, transactionid, advisory)."""
        rows = await self.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND wait_event = :kind",
            kind=kind,
        )
        return int(rows[0][0])

    @contextlib.asynccontextmanager
    async def holding(self, statement: str) -> AsyncIterator[None]:
        """A transaction (and session) of the test's own that holds a lock in the block."""
        async with self.engine.connect() as conn:
            await conn.begin()
            await conn.execute(text(statement))
            try:
                yield
            finally:
                await conn.rollback()


def waiting(db: Db, kind: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await db.waiting(kind) >= 1

    return check


async def test_a_retry_during_the_first_attempt_waits_for_it(api: Api) -> None:
    """The second insert of the key waits on the unique index until the first commits."""
    db = Db(state_of(api.app).engine)
    async with db.holding("LOCK TABLE items IN EXCLUSIVE MODE"):
        first = asyncio.create_task(post_item(api, {"name": "slow"}, KEY))
        await until(waiting(db, "relation"))  # the first attempt: its key in, items locked
        second = asyncio.create_task(post_item(api, {"name": "slow"}, KEY))
        # The retry waits for the first attempt's transaction (its key), not for the table.
        await until(waiting(db, "transactionid"))
        assert not first.done() and not second.done()
    answers = await asyncio.gather(first, second)
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[1].content == answers[0].content
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert await api.count("items") == 1


# --- Under Gunicorn, with workers killed ---------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


class Server(GunicornServer):
    def client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url="http://app.internal", timeout=30)

    def kill_workers(self) -> int:
        """SIGKILL every worker (the master starts new ones); the count of start-ups to
        wait for until their successors serve."""
        assert self.process is not None
        started = self.stderr.read_text().count("Application startup complete")
        workers = children(self.process.pid)
        assert len(workers) == self.workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        return started + self.workers


@contextlib.contextmanager
def gunicorn(env: dict[str, str], workers: int = 1) -> Iterator[Server]:
    server = Server({**env, "OTEL_SDK_DISABLED": "true"}, workers=workers)
    try:
        yield server.start()
    finally:
        server.cleanup()


@contextlib.asynccontextmanager
async def database(pg: PostgresServer, name: str) -> AsyncIterator[Db]:
    settings = DatabaseSettings(**{k[4:].lower(): v for k, v in pg.env(name).items()})
    engine = create_async_engine(settings.database_url(), poolclass=NullPool)
    try:
        yield Db(engine)
    finally:
        await engine.dispose()


async def test_a_worker_killed_before_its_commit_leaves_nothing(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    name = pg.create_database()
    env = clean_env(**pg.env(name), **cache_server.env(db=4))
    with gunicorn(env) as server:
        async with database(pg, name) as db, server.client() as client:
            async with db.holding("LOCK TABLE items IN EXCLUSIVE MODE"):
                attempt = asyncio.create_task(
                    client.post("/api/items", json={"name": "n"}, headers=KEY)
                )
                await until(waiting(db, "relation"))  # key inserted, the row not yet
                await asyncio.to_thread(server.wait_for_workers, server.kill_workers())
                with pytest.raises(httpx.TransportError):
                    await attempt
            retry = await client.post("/api/items", json={"name": "n"}, headers=KEY)
            assert retry.status_code == 201, retry.text
            assert "idempotent-replayed" not in retry.headers  # it ran afresh
            assert await db.count("items") == 1
            again = await client.post("/api/items", json={"name": "n"}, headers=KEY)
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == retry.content
            assert await db.count("items") == 1


async def test_a_worker_killed_after_its_commit_is_answered_from_the_key(
    pg: PostgresServer,
) -> None:
    """The worker commits, then waits on a frozen Valkey (to invalidate the cache) and is
    killed there: the client never saw the 201. The retry gets it, and writes nothing."""
    cache = CacheServer().start()
    name = pg.create_database()
    env = clean_env(**pg.env(name), **cache.env(), APP_CACHE_SOCKET_TIMEOUT="60")
    try:
        with gunicorn(env) as server:
            async with database(pg, name) as db, server.client() as client:
                cache.pause()
                try:
                    attempt = asyncio.create_task(
                        client.post("/api/items", json={"name": "n"}, headers=KEY)
                    )

                    async def answered() -> bool:
                        rows = await db.sql("SELECT status_code FROM idempotency_keys")
                        return bool(rows) and rows[0][0] == 201

                    await until(answered)
                    assert await db.count("items") == 1
                    successors = server.kill_workers()
                    with pytest.raises(httpx.TransportError):
                        await attempt
                finally:
                    cache.resume()  # a new worker pings the cache as it starts
                await asyncio.to_thread(server.wait_for_workers, successors)
                retry = await client.post("/api/items", json={"name": "n"}, headers=KEY)
                assert retry.status_code == 201
                assert retry.headers["idempotent-replayed"] == "true"
                row = (await db.sql("SELECT id, name FROM items"))[0]
                assert (retry.json()["id"], retry.json()["name"]) == (row[0], row[1])
                assert await db.count("items") == 1
    finally:
        cache.stop(remove=True)


async def test_killed_workers_under_load_double_nothing(
    pg: PostgresServer, cache_server: CacheServer
) -> None:
    """The drill that found the defect: writes under load while the workers are killed,
    each broken request resent with its key as nginx does. Every key is one row, and
    every client got the answer of that row."""
    name = pg.create_database()
    env = clean_env(**pg.env(name), **cache_server.env(db=6))
    keys = [f"load-{n:04d}" for n in range(240)]
    pending = list(reversed(keys))
    answers: dict[str, dict[str, Any]] = {}
    resent = 0

    with gunicorn(env, workers=2) as server:

        async def client_loop() -> None:
            nonlocal resent
            async with server.client() as client:
                while pending:
                    key = pending.pop()
                    while True:
                        try:
                            response = await client.post(
                                "/api/items", json={"name": key}, headers={"Idempotency-Key": key}
                            )
                            break
                        except httpx.TransportError:
                            resent += 1
                            await asyncio.sleep(0.05)
                    assert response.status_code == 201, response.text
                    answers[key] = response.json()

        async def killer() -> None:
            started = server.workers
            for _ in range(3):
                await asyncio.sleep(0.4)
                if not pending:
                    break
                started = server.kill_workers()
                await asyncio.to_thread(server.wait_for_workers, started)

        await asyncio.gather(killer(), *(client_loop() for _ in range(8)))
        async with database(pg, name) as db:
            found = await db.sql("SELECT id, name FROM items")
    print(f"{len(keys)} writes, {resent} resent after a killed worker")
    assert resent > 0, "no request was in flight when a worker died: nothing was proven"
    assert len(found) == len(keys)  # none doubled...
    rows = {row[1]: row[0] for row in found}
    assert set(rows) == set(keys)  # ... none lost
    assert {key: answer["id"] for key, answer in answers.items()} == rows


HOLD_ORDER_UPDATES = """
SET ROLE app;
CREATE FUNCTION hold_order_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_lock_shared(4242);
    PERFORM pg_advisory_unlock_shared(4242);
    RETURN NEW;
END $$;
CREATE TRIGGER hold BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION hold_order_updates();
"""
LINE = {"name": "Product 1", "quantity": 2, "price": "29.99"}


@pytest.mark.parametrize("finisher", ["retry", "sweep"])
async def test_an_order_killed_between_charge_and_update_is_finished_once(
    pg: PostgresServer, cache_server: CacheServer, finisher: str
) -> None:
    """The charge committed at payments, the worker died before the order said so: the
    retry with the key, or else the sweep, confirms it, with the one payment."""
    name = pg.create_database()
    server = Server(
        clean_env(**pg.env(name), **cache_server.env(db=5), OTEL_SDK_DISABLED="true"), workers=1
    )
    own = f"unix:{server.socket}"
    server.env.update(
        APP_DOMAINS="items,notes,users,orders,payments",
        APP_JWT_SECRET=JWT_SECRET,
        APP_USERS_URL=own,
        APP_PAYMENTS_URL=own,
        APP_ORDERS_URL=own,
        APP_PAYMENT_SUCCESS_RATE="1",
        APP_PASSWORD_HASH_TIME_COST="2",
        APP_PASSWORD_HASH_MEMORY_KIB="19456",
        APP_ORDER_SWEEP_INTERVAL="3600" if finisher == "retry" else "0.3",
        APP_ORDER_STALE_AFTER="1",
    )
    try:
        server.start()
        pg.psql(HOLD_ORDER_UPDATES, name)
        async with database(pg, name) as db, server.client() as client:
            alice = {**await register(client, "alice"), **KEY}
            async with db.holding("SELECT pg_advisory_lock(4242)"):
                attempt = asyncio.create_task(
                    client.post("/orders", json={"items": [LINE]}, headers=alice)
                )
                await until(waiting(db, "advisory"))  # charged, updating the order
                assert await db.count("payments") == 1
                await asyncio.to_thread(server.wait_for_workers, server.kill_workers())
                with pytest.raises(httpx.TransportError):
                    await attempt
            pg.psql("DROP TRIGGER hold ON orders", name)
            assert (await db.sql("SELECT status FROM orders"))[0][0] == "pending"
            if finisher == "sweep":

                async def confirmed() -> bool:
                    return (await db.sql("SELECT status FROM orders"))[0][0] == "confirmed"

                await until(confirmed)
            retry = await client.post("/orders", json={"items": [LINE]}, headers=alice)
            assert retry.status_code == 201, retry.text
            order = retry.json()
            assert order["status"] == "confirmed"
            payment = (await db.sql("SELECT id, order_id, status FROM payments"))[0]
            assert tuple(payment) == (order["payment_id"], order["id"], "completed")
            assert await db.count("orders") == 1
            assert await db.count("payments") == 1
    finally:
        server.cleanup()
