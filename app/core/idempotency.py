"""Exactly-once writes: an ``Idempotency-Key`` is stored with the write it made.

nginx resends a request whose upstream connection broke (``proxy_next_upstream ...
non_idempotent``, so that deploys drop nothing) and clients retry; a write that had
committed before the break would run again. So a write (POST, PUT, PATCH, DELETE) that
carries an ``Idempotency-Key`` header records the key, under a unique constraint, **in
the same PostgreSQL transaction as the write**, together with the answer:

* a worker killed before the commit leaves nothing: the retry runs afresh;
* killed after it, the retry finds the key and gets the stored answer: the same status
  and body, with ``Idempotent-Replayed: true``;
* a retry arriving while the first attempt still runs inserts the same key, and
  PostgreSQL's unique index makes that insert wait until the first transaction ends; the
  retry then finds the stored answer (or, if the first rolled back, runs itself).

**Scope.** A key belongs to a principal and a route: ``user:{id}`` on routes that take a
bearer token (checked before the key is looked at), ``service:orders`` on the internal
routes, ``anon`` elsewhere; the route is the method and its template as published
(``POST /api/items``, ``PATCH /api/items/{item_id}``). So one user's keys never meet
another's, nor one route's another's. The same key with another request (other path
parameters, query or body: a SHA-256 fingerprint of them) is a 422. The body counts only
where the route takes one: a route without one (DELETE) ignores whatever was sent, with
a key as without (app/core/body.py).

Only 2xx answers are stored: an error has written nothing (its transaction rolls back), so
a retry of it runs again. A request without the header runs as before, without
deduplication: through nginx every request has one (the client's, or ``$request_id``).

A write joins the key's transaction through :func:`unit_of_work` (a service opens its
write sessions with it), and defers what must follow the commit (cache invalidation) with
:func:`after_commit`. The transaction, and the key's claim, begin at the request's first
write: what a handler does before (ask another service, hash a password) holds no
database connection, and a retry finds the earlier answer at that point. Orders span an
HTTP call to payments and cannot be one transaction: they use :func:`claim` and
:func:`store` themselves (``app/orders``).

Stored answers expire after ``APP_IDEMPOTENCY_TTL`` seconds (24 h): an expired key is
free again, and a task in each worker deletes expired rows by the ``created_at`` index,
a bounded batch at a time, one worker at a time (:func:`maintenance`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy import (
    BigInteger,
    DateTime,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.core import auth
from app.core.database import Base
from app.core.metrics import route_label
from app.core.state import AppState, state_of

logger = logging.getLogger(__name__)

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Printable ASCII (space included), 1 to 255 characters; nginx's $request_id is 32 hex.
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
SCOPE_CONSTRAINT = "uq_idempotency_keys_principal_route_key"
# pg_try_advisory_xact_lock key of the purge: one worker at a time deletes.
PURGE_LOCK_KEY = 0x7765627374616B31  # "webstak1"
PURGE_BATCH = 1000
PURGE_INTERVAL = 60.0

KEY_PARAMETER: dict[str, Any] = {
    "name": KEY_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255, "pattern": r"^[ -~]*$"},
    "description": "Makes a retry of this write answer with the first attempt's result "
    "instead of writing again (printable ASCII, up to 255 characters; kept 24 h by default). "
    "Empty is the same as not sent.",
}


class IdempotencyRecord(Base):
    """One key of one principal on one route, and the answer its write gave."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "route", "key", name=SCOPE_CONSTRAINT),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # bigserial
    principal: Mapped[str] = mapped_column(String(64))  # user:7, service:orders, anon
    route: Mapped[str] = mapped_column(String(255))  # POST /orders
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the request, hex
    # NULL while the write is in progress (orders only: its key commits before the charge).
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    content_type: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The row the write created (orders: the order a retry resumes).
    resource_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


def bad_key(message: str, value: str | None = None) -> RequestValidationError:
    """A 422 naming the header, in the shape of FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("header", KEY_HEADER), "msg": message, "input": value}]
    )


def key_from(request: Request) -> str | None:
    """The request's key, ``None`` without one; 422 when it is malformed. An empty key is
    none: nginx cannot tell it from a missing header, and gives both a key of its own."""
    values = request.headers.getlist(KEY_HEADER)
    if len(values) > 1:
        raise bad_key("send one Idempotency-Key header, not several")
    if not values or not values[0]:
        return None
    if not _KEY.fullmatch(values[0]):
        raise bad_key("must be 1 to 255 printable ASCII characters", values[0])
    return values[0]


@dataclass(frozen=True)
class KeyedRequest:
    """What identifies a write for deduplication: whose, which route, which key, what."""

    principal: str
    route: str
    key: str
    fingerprint: str


async def keyed_request(
    request: Request, principal: str, key: str, takes_body: bool = True
) -> KeyedRequest:
    route = f"{request.method} {route_label(request.scope)}"
    digest = hashlib.sha256()
    params = json.dumps(sorted(request.path_params.items()), default=str)
    for part in (route, params, request.url.query):
        digest.update(part.encode())
        digest.update(b"\x00")
    if takes_body:  # reading it here is where a body refused by app/core/body.py is answered
        digest.update(await request.body())
    return KeyedRequest(principal, route, key, digest.hexdigest())


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim`: the record, and whether this request made it."""

    record_id: int
    new: bool
    record: IdempotencyRecord | None = None  # the earlier request's, when not new


async def claim(session: AsyncSession, request: KeyedRequest, ttl: int) -> Claim:
    """Insert the key in ``session``'s transaction, or find the earlier request's record.

    A concurrent request with the same key has inserted it but not committed: PostgreSQL
    makes this insert wait for that transaction, then reports the conflict (the earlier
    one committed) or inserts (it rolled back). A record older than ``ttl`` is replaced.
    """
    scope = (
        IdempotencyRecord.principal == request.principal,
        IdempotencyRecord.route == request.route,
        IdempotencyRecord.key == request.key,
    )
    for _attempt in range(3):
        inserted = await session.scalar(
            insert(IdempotencyRecord)
            .values(
                principal=request.principal,
                route=request.route,
                key=request.key,
                fingerprint=request.fingerprint,
            )
            .on_conflict_do_nothing(constraint=SCOPE_CONSTRAINT)
            .returning(IdempotencyRecord.id)
        )
        if inserted is not None:
            return Claim(inserted, new=True)
        cutoff = datetime.now(UTC) - timedelta(seconds=ttl)
        expired = await session.scalar(
            delete(IdempotencyRecord)
            .where(*scope, IdempotencyRecord.created_at < cutoff)
            .returning(IdempotencyRecord.id)
        )
        if expired is not None:
            continue  # an expired answer: the key is free again
        record = await session.scalar(select(IdempotencyRecord).where(*scope))
        if record is None:
            continue  # deleted (purged) in between: try again
        if record.fingerprint != request.fingerprint:
            raise bad_key(
                "this Idempotency-Key was used for a different request "
                "(other body, path or query); use a new key",
                request.key,
            )
        return Claim(record.id, new=False, record=record)
    raise RuntimeError("idempotency key kept changing under us")  # not reached in practice


async def store(session: AsyncSession, record_id: int, response: Response) -> None:
    """Record the answer (in the write's transaction)."""
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == record_id)
        .values(
            status_code=response.status_code,
            content_type=response.headers.get("content-type"),
            body=bytes(response.body),
        )
    )


def replay(record: IdempotencyRecord) -> Response:
    """The stored answer, marked as a replay."""
    assert record.status_code is not None
    headers = {REPLAYED_HEADER: "true"}
    if record.content_type:
        headers["content-type"] = record.content_type
    return Response(content=record.body or b"", status_code=record.status_code, headers=headers)


# --- The write transaction a request's services share --------------------------------


@dataclass
class _Transaction:
    """A keyed request's write transaction, begun (and the key claimed) at its first write,
    so that what a handler does before writing (calls to other services, password hashes)
    holds no connection."""

    sessions: async_sessionmaker[AsyncSession]
    keyed: KeyedRequest
    ttl: int
    session: AsyncSession | None = None
    record_id: int | None = None
    after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def begin(self) -> AsyncSession:
        if self.session is None:
            self.session = self.sessions()
            claimed = await claim(self.session, self.keyed, self.ttl)
            if claimed.record is not None:
                raise _Answered(claimed.record)
            self.record_id = claimed.record_id
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()  # rolls back whatever was not committed


class _Answered(Exception):  # not an error: the request was answered before
    """Raised at a keyed request's first write when its key has an earlier record."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__("answered before")
        self.record = record


_current: ContextVar[_Transaction | None] = ContextVar("webstack_write_transaction", default=None)


@contextlib.asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for a service's write: the request's key transaction when there is one
    (flushed here, committed with the key), else a session of its own, committed here."""
    current = _current.get()
    if current is not None:
        session = await current.begin()
        yield session
        await session.flush()
        return
    async with sessions() as session:
        yield session
        await session.commit()


async def after_commit(callback: Callable[[], Awaitable[None]]) -> None:
    """Run ``callback`` once the write is committed (now, outside a key's transaction)."""
    current = _current.get()
    if current is None:
        await callback()
    else:
        current.after_commit.append(callback)


@contextlib.contextmanager
def _joined(transaction: _Transaction) -> Iterator[None]:
    token = _current.set(transaction)
    try:
        yield
    finally:
        _current.reset(token)


# --- Routes ---------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def _calls(dependant: Dependant) -> Iterator[Any]:
    yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


class IdempotentRoute(APIRoute):
    """An APIRoute whose writes honour ``Idempotency-Key`` (the module docstring).

    Used as a router's ``route_class``; reads pass straight through.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = {method.upper() for method in kwargs.get("methods") or ()}
        if methods & WRITE_METHODS:
            extra = dict(kwargs.get("openapi_extra") or {})
            extra["parameters"] = [*extra.get("parameters", []), KEY_PARAMETER]
            kwargs["openapi_extra"] = extra
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if not self.methods & WRITE_METHODS:
            return handler
        calls = set(_calls(self.dependant))
        if auth.authenticate in calls:
            principal = _user_principal
        elif auth.authenticate_orders_service in calls:
            principal = _service_principal
        else:
            principal = _anonymous

        takes_body = self.body_field is not None

        async def idempotent(request: Request) -> Response:
            return await run_once(request, handler, principal, takes_body)

        return idempotent


async def _user_principal(request: Request) -> str:
    return f"user:{(await auth.authenticate_request(request)).user_id}"


async def _service_principal(request: Request) -> str:
    await auth.authenticate_service_request(request)
    return auth.SERVICE_SUBJECT


async def _anonymous(request: Request) -> str:
    return "anon"


async def run_once(
    request: Request,
    handler: Handler,
    principal_of: Callable[[Request], Awaitable[str]],
    takes_body: bool = True,
) -> Response:
    """Run ``handler`` with its writes and its key in one transaction, or replay."""
    key = key_from(request)
    if key is None:
        return await handler(request)
    keyed = await keyed_request(request, await principal_of(request), key, takes_body)
    state = state_of(request.app)
    transaction = _Transaction(state.sessions, keyed, state.settings.idempotency_ttl)
    try:
        with _joined(transaction):
            try:
                response = await handler(request)
            except _Answered as answered:
                if answered.record.status_code is None:
                    raise HTTPException(
                        status.HTTP_409_CONFLICT,
                        detail="a request with this Idempotency-Key is still in progress",
                    ) from None
                return replay(answered.record)
            except RequestValidationError:
                # The same fingerprint is the same bad input: no earlier attempt can have
                # succeeded, so no database is asked (and an outage leaves it a 422).
                raise
            except Exception:
                if transaction.session is None and (earlier := await _answered(transaction)):
                    return earlier
                raise
        session = transaction.session
        if not 200 <= response.status_code < 300:
            # Whatever it wrote goes (close rolls back), and so does the key.
            if session is None and (earlier := await _answered(transaction)):
                return earlier
            return response
        if session is None:
            return response  # it wrote nothing: nothing to keep
        assert transaction.record_id is not None
        await store(session, transaction.record_id, response)
        await session.commit()
    finally:
        await transaction.close()
    for callback in transaction.after_commit:
        await callback()
    return response


async def _answered(transaction: _Transaction) -> Response | None:
    """The stored answer to this very request, if an earlier attempt has one by now.

    A request refused before its first write by a pre-check ("username already taken")
    may be the retry of the one that made that state: the earlier answer wins.
    """
    keyed = transaction.keyed
    cutoff = datetime.now(UTC) - timedelta(seconds=transaction.ttl)
    async with transaction.sessions() as session:
        record = await session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.principal == keyed.principal,
                IdempotencyRecord.route == keyed.route,
                IdempotencyRecord.key == keyed.key,
                IdempotencyRecord.fingerprint == keyed.fingerprint,
                IdempotencyRecord.status_code.is_not(None),
                IdempotencyRecord.created_at >= cutoff,
            )
        )
    return None if record is None else replay(record)


# --- Expiry ---------------------------------------------------------------------------


async def purge_expired(sessions: async_sessionmaker[AsyncSession], ttl: int) -> int | None:
    """Delete up to PURGE_BATCH expired records, oldest first; ``None`` if another worker
    holds the purge lock."""
    cutoff = datetime.now(UTC) - timedelta(seconds=ttl)
    async with sessions() as session:
        locked = await session.scalar(select(func.pg_try_advisory_xact_lock(PURGE_LOCK_KEY)))
        if not locked:
            return None
        oldest = (
            select(IdempotencyRecord.id)
            .where(IdempotencyRecord.created_at < cutoff)
            .order_by(IdempotencyRecord.created_at)
            .limit(PURGE_BATCH)
        )
        result = await session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(oldest.scalar_subquery()))
        )
        await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _purge_forever(sessions: async_sessionmaker[AsyncSession], ttl: int) -> None:
    while True:
        # Jittered, so the workers of a host do not all wake at once.
        await asyncio.sleep(PURGE_INTERVAL * random.uniform(0.5, 1.5))  # noqa: S311
        try:
            # A full batch means more may be due: go on, one batch per turn of the loop.
            for _batch in range(100):
                if await purge_expired(sessions, ttl) != PURGE_BATCH:
                    break
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("could not delete expired idempotency keys: %s", type(exc).__name__)


@contextlib.asynccontextmanager
async def maintenance(state: AppState) -> AsyncIterator[None]:
    """The per-worker task that deletes expired keys, for the app's lifespan."""
    task = asyncio.create_task(_purge_forever(state.sessions, state.settings.idempotency_ttl))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
