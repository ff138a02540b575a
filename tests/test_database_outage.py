"""PostgreSQL out of reach or unable to serve is 503 with Retry-After, whatever the driver
raised; bugs stay 500 and are logged; the app serves again by itself once it is back.

Every test here runs against a PostgreSQL of this module's own, which it terminates,
locks, restricts, stops and kills, and leaves serving.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from app.core.database import database_unavailable
from app.core.settings import Settings
from app.core.state import state_of
from app.main import create_app
from devservers import CacheServer, PostgresServer, free_port
from tests.apps import Api, make_settings, running_app, until

ERRORS_LOG = "app.core.errors"
APPLICATION_NAME = "webstack-app"


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def outage_settings(pg: PostgresServer, cache: CacheServer, **overrides: Any) -> Settings:
    # No cache: every read goes to PostgreSQL. Short timeouts: an outage is answered fast.
    values: dict[str, Any] = {
        "cache_enabled": False,
        "db_connect_timeout": 1,
        "db_pool_timeout": 2,
        **overrides,
    }
    return make_settings(pg, cache, **values)


@pytest.fixture
async def api(own_pg: PostgresServer, cache_server: CacheServer) -> AsyncIterator[Api]:
    async with running_app(outage_settings(own_pg, cache_server)) as running:
        assert (await running.client.post("/api/items", json={"name": "one"})).status_code == 201
        yield running


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": "database unavailable"}
    assert response.headers["retry-after"] == "1"


async def app_backends(pg: PostgresServer) -> list[int]:
    rows = await asyncio.to_thread(
        pg.psql,
        f"SELECT pid FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}'",
    )
    return [int(pid) for pid in rows.split()]


async def terminate_app_backends(pg: PostgresServer) -> None:
    """Close every connection the app's pool holds, from the server's side."""
    await asyncio.to_thread(
        pg.psql,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = '{APPLICATION_NAME}'",
    )


@asynccontextmanager
async def items_locked(pg: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    """The items table locked by another session: the app's reads of it wait."""
    conn = await asyncpg.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, database=pg.database
    )
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


async def waiting_on_lock(conn: asyncpg.Connection, count: int = 1) -> list[int]:
    """The app's backends blocked on a lock, once there are ``count`` of them."""
    for _ in range(200):
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
            "AND wait_event_type = 'Lock'",
            APPLICATION_NAME,
        )
        if len(pids) >= count:
            return [row["pid"] for row in pids]
        await asyncio.sleep(0.02)
    raise AssertionError("the app's query never waited on the lock")


async def test_a_connection_lost_mid_query_is_503(api: Api, own_pg: PostgresServer) -> None:
    async with items_locked(own_pg) as locker:
        read = asyncio.create_task(api.client.get("/api/items/1"))
        [pid] = await waiting_on_lock(locker)
        # "terminating connection due to administrator command" (57P01), as in a fast
        # shutdown or a failover's fencing.
        await locker.execute("SELECT pg_terminate_backend($1)", pid)
        assert_unavailable(await read)
    assert (await api.client.get("/api/items/1")).status_code == 200


async def test_failed_checkouts_leave_the_pool_gauge_alone(
    api: Api, own_pg: PostgresServer
) -> None:
    # A pooled connection found dead whose reconnect fails makes SQLAlchemy fire "checkin"
    # without a "checkout": the in-use gauge must not count those.
    from prometheus_client import REGISTRY

    def in_use() -> float | None:
        return REGISTRY.get_sample_value("webstack_db_pool_connections_in_use")

    before = in_use()
    await asyncio.to_thread(own_pg.psql, f"ALTER ROLE {own_pg.user} CONNECTION LIMIT 0")
    try:
        await terminate_app_backends(own_pg)
        for _ in range(3):
            assert_unavailable(await api.client.get("/api/items/1"))
    finally:
        await asyncio.to_thread(own_pg.psql, f"ALTER ROLE {own_pg.user} CONNECTION LIMIT -1")
    assert in_use() == before
    assert (await api.client.get("/api/items/1")).status_code == 200
    assert in_use() == before


async def test_a_statement_timeout_is_503(
    own_pg: PostgresServer, cache_server: CacheServer
) -> None:
    settings = outage_settings(own_pg, cache_server, db_command_timeout=0.3)
    async with running_app(settings) as api:
        await api.client.post("/api/items", json={"name": "slow"})
        async with items_locked(own_pg):
            started = time.perf_counter()
            assert_unavailable(await api.client.get("/api/items/1"))
            assert time.perf_counter() - started < 2
        assert (await api.client.get("/api/items/1")).status_code == 200


async def test_no_pooled_connection_in_time_is_503(
    own_pg: PostgresServer, cache_server: CacheServer
) -> None:
    settings = outage_settings(
        own_pg, cache_server, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.3
    )
    async with running_app(settings) as api:
        await api.client.post("/api/items", json={"name": "queued"})
        async with items_locked(own_pg) as locker:
            holder = asyncio.create_task(api.client.get("/api/items/1"))
            await waiting_on_lock(locker)
            assert_unavailable(await api.client.get("/api/items/1"))
        assert (await holder).status_code == 200  # it waited for the lock, not the pool


async def test_too_many_connections_is_503(api: Api, own_pg: PostgresServer) -> None:
    await asyncio.to_thread(own_pg.psql, f"ALTER ROLE {own_pg.user} CONNECTION LIMIT 0")
    try:
        await terminate_app_backends(own_pg)  # the pool must connect anew
        # "too many connections for role" (53300), raised by asyncpg while connecting.
        assert_unavailable(await api.client.get("/api/items/1"))
        assert_unavailable(await api.client.post("/api/items", json={"name": "lost"}))
    finally:
        await asyncio.to_thread(own_pg.psql, f"ALTER ROLE {own_pg.user} CONNECTION LIMIT -1")
    assert (await api.client.get("/api/items/1")).status_code == 200
    assert await api.count("items") == 1


async def test_a_read_only_database_is_503_for_writes(api: Api, own_pg: PostgresServer) -> None:
    """A standby, as a client can meet one during a failover: reads work, writes wait."""
    database = own_pg.database
    await asyncio.to_thread(
        own_pg.psql, f"ALTER DATABASE {database} SET default_transaction_read_only = on"
    )
    try:
        await terminate_app_backends(own_pg)  # new sessions take the setting
        assert (await api.client.get("/api/items/1")).status_code == 200
        # "cannot execute INSERT in a read-only transaction" (25006)
        assert_unavailable(await api.client.post("/api/items", json={"name": "lost"}))
        assert_unavailable(await api.client.delete("/api/items/1"))
    finally:
        await asyncio.to_thread(
            own_pg.psql, f"ALTER DATABASE {database} RESET default_transaction_read_only"
        )
        await terminate_app_backends(own_pg)
    assert (await api.client.post("/api/items", json={"name": "two"})).status_code == 201
    assert await api.count("items") == 2


async def test_a_server_shutting_down_is_503(api: Api, own_pg: PostgresServer) -> None:
    """A smart shutdown waits for open sessions and refuses new ones: "the database system
    is shutting down" (57P03, asyncpg's CannotConnectNowError), raised while connecting."""
    holder = await asyncpg.connect(
        host=own_pg.host,
        port=own_pg.port,
        user=own_pg.user,
        password=own_pg.password,
        database=own_pg.database,
    )
    try:
        await terminate_app_backends(own_pg)
        assert own_pg.process is not None
        own_pg.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert_unavailable(await api.client.get("/api/items/1"))
    finally:
        await holder.close()
    await asyncio.to_thread(own_pg.process.wait, 30)
    await asyncio.to_thread(own_pg.restart)
    assert (await api.client.get("/api/items/1")).status_code == 200


@asynccontextmanager
async def app_with_route(settings: Settings, path: str, endpoint: Any) -> AsyncIterator[Api]:
    app = create_app(settings)
    app.add_api_route(path, endpoint, methods=["GET"])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(app, client)


async def test_bad_input_with_an_idempotency_key_stays_422_while_unreachable(
    own_pg: PostgresServer, cache_server: CacheServer
) -> None:
    """A keyed write is looked up in PostgreSQL only when it could have an earlier answer:
    bad input cannot (its fingerprint is the same bad input), so it is 422, outage or not."""
    settings = outage_settings(own_pg, cache_server, db_port=free_port(), db_create_schema=False)
    async with running_app(settings, reset=False) as api:
        key = {"Idempotency-Key": "k1"}
        refused = await api.client.post("/api/items", json={"name": ""}, headers=key)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "name"]
        assert_unavailable(await api.client.post("/api/items", json={"name": "x"}, headers=key))


async def test_bugs_stay_500_logged_without_their_parameters(
    own_pg: PostgresServer, cache_server: CacheServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Request) -> None:
        async with state_of(request.app).sessions() as session:
            await session.execute(
                text("SELECT name FROM no_such_table WHERE name = :name"),
                {"name": "hunter2-secret"},
            )

    caplog.set_level(logging.ERROR, logger=ERRORS_LOG)
    async with app_with_route(outage_settings(own_pg, cache_server), "/broken", broken) as api:
        response = await api.client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    [record] = [r for r in caplog.records if r.name == ERRORS_LOG]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and isinstance(record.exc_info[1], ProgrammingError)
    assert "GET /broken" in record.getMessage()
    assert "no_such_table" in caplog.text  # the statement, for whoever debugs it
    assert "hunter2" not in caplog.text  # never its values


async def test_an_unexpected_constraint_violation_is_500(
    own_pg: PostgresServer, cache_server: CacheServer
) -> None:
    async def duplicate(request: Request) -> None:
        async with state_of(request.app).sessions() as session:
            await session.execute(text("INSERT INTO items (id, name) VALUES (1, 'a'), (1, 'b')"))

    async with app_with_route(outage_settings(own_pg, cache_server), "/dup", duplicate) as api:
        response = await api.client.get("/dup")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), True),
        (asyncpg.exceptions.ConnectionFailureError("x"), True),
        (asyncpg.exceptions.ProtocolViolationError("x"), True),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.CrashShutdownError("x"), True),
        (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), True),
        (asyncpg.exceptions.OutOfMemoryError("x"), True),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"), True),
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to timeout"), True),
        (asyncpg.exceptions.IdleSessionTimeoutError("x"), True),
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
        (asyncpg.exceptions.UndefinedTableError("no such table"), False),
        (asyncpg.exceptions.InvalidPasswordError("password authentication failed"), False),
        (asyncpg.exceptions.InvalidCatalogNameError("no such database"), False),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), False),
        (asyncpg.exceptions.InterfaceError("another operation is in progress"), False),
        (asyncpg.exceptions.DataError("invalid input"), False),
        (ValueError("not a database error"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_which_driver_errors_mean_unavailable(error: BaseException, unavailable: bool) -> None:
    """The driver's classes as they arrive raw (connecting), and as SQLAlchemy wraps them."""
    assert database_unavailable(error) is unavailable
    # SQLAlchemy's asyncpg adapter raises its own error, with asyncpg's SQLSTATE, from
    # asyncpg's; SQLAlchemy wraps that in a DBAPIError.
    adapted = Exception(str(error))
    adapted.sqlstate = getattr(error, "sqlstate", None)  # type: ignore[attr-defined]
    adapted.__cause__ = error
    assert database_unavailable(DBAPIError("SELECT 1", None, adapted)) is unavailable


def test_an_invalidated_connection_is_unavailable_whatever_the_error() -> None:
    error = DBAPIError("SELECT 1", None, Exception("boom"), connection_invalidated=True)
    assert database_unavailable(error)
    assert not database_unavailable(IntegrityError("INSERT", None, Exception("duplicate")))


async def test_postgres_stopped_restarted_and_killed_under_load(
    own_pg: PostgresServer, cache_server: CacheServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads and writes on eight connections while PostgreSQL goes through a fast shutdown,
    an immediate one and a SIGKILL of all its processes, each followed by a restart.

    Every answer is 2xx or 503 (with Retry-After); the app answers 2xx again within
    seconds of each restart, with the pool it had: nothing restarts the app.
    """
    caplog.set_level(logging.WARNING, logger=ERRORS_LOG)
    answers: list[tuple[float, int, bool]] = []  # (when, status, has Retry-After)
    stop = asyncio.Event()
    async with running_app(outage_settings(own_pg, cache_server)) as api:
        for n in range(20):
            await api.client.post("/api/items", json={"name": f"seed {n}"})

        async def load(worker: int) -> None:
            for sent in range(100_000):
                if stop.is_set():
                    return
                try:
                    if sent % 4 == 0:
                        response = await api.client.post("/api/items", json={"name": f"w{worker}"})
                    elif sent % 4 == 1:
                        response = await api.client.get("/api/items", params={"limit": 10})
                    else:
                        response = await api.client.get(f"/api/items/{1 + sent % 20}")
                except Exception:  # out of the app unhandled: a server answers 500
                    answers.append((time.monotonic(), 500, False))
                    continue
                answers.append(
                    (time.monotonic(), response.status_code, "retry-after" in response.headers)
                )
                if response.status_code == 503:
                    await asyncio.sleep(0.02)  # as a client honouring Retry-After would, faster

        def served_since(moment: float) -> int:
            return sum(1 for when, status, _ in answers if when > moment and status < 300)

        async def serving(since: float, count: int) -> None:
            await until(lambda: served_since(since) >= count, 60, f"{count} successes")

        workers = [asyncio.create_task(load(n)) for n in range(8)]
        recoveries: list[float] = []
        try:
            await serving(time.monotonic(), 40)
            for how in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
                await asyncio.to_thread(own_pg.halt, how)
                await asyncio.sleep(1.0)  # down: every request fails meanwhile
                await asyncio.to_thread(own_pg.restart)
                back = time.monotonic()
                await until(
                    lambda back=back: served_since(back) > 0, 10, f"a success after {how.name}"
                )
                recoveries.append(time.monotonic() - back)
                await serving(back, 40)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        # Served normally once it is over.
        assert (await api.client.get("/api/items/1")).status_code == 200

    statuses = Counter(status for _, status, _ in answers)
    warnings = [r for r in caplog.records if r.name == ERRORS_LOG]
    print(
        f"{len(answers)} answers {dict(statuses)}; back within "
        f"{', '.join(f'{r:.2f}' for r in recoveries)} s of each restart; "
        f"{len(warnings)} log lines"
    )
    assert set(statuses) <= {200, 201, 503}, statuses
    assert statuses[503] > 10  # the outages were seen...
    assert statuses[200] + statuses[201] >= 160 and statuses[201] > 10  # ... and the service
    assert all(retry for _, status, retry in answers if status == 503)
    assert max(recoveries) < 5
    # The outage is logged, not every request it failed.
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert 1 <= len(warnings) <= 6
