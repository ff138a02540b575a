"""At most ``APP_MAX_CONCURRENT_REQUESTS`` requests of a worker at work at once; the rest wait.

A worker accepts every connection nginx or a client opens, and without a bound it starts
every request it reads: under a thousand connections each of two workers runs hundreds at
once. They all share one event loop, so a reply from Valkey that arrived in 0.1 ms waits
for the loop to get round to it, and the wait grows with the crowd. The cache's short
timeouts then fire although Valkey is fine, the breaker sends reads to PostgreSQL, which is
slower still, and a loaded worker collapses into its slow path (measured by bench/stack.py
before this existed: cached reads fell to a few hundred a second with cache timeouts in
the journal). The same holds for every pool a request draws from.

So requests beyond the bound wait here, in arrival order, *before* they start: the queue
costs them latency (which they would have paid anyway, the CPU is the limit) but no
timeout inside the app measures it, and the worker's work in progress stays small. Nothing
is refused: a 503 would only move the retry to the client.

Health checks and metrics scrapes are not queued: under overload they must still answer.

The bound should stay at or below ``APP_CACHE_MAX_CONNECTIONS`` (a request beyond that
skips the cache) and well above what the slowest dependency needs in flight to keep the
worker busy (orders waiting on payments over HTTP hold their slot while they wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send


class _Slot:
    """One request's place among the limit: held, given back while it waits on a service."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self.held = False

    async def acquire(self) -> None:
        await self._slots.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()


_current_slot: ContextVar[_Slot | None] = ContextVar("webstack_request_slot", default=None)


@asynccontextmanager
async def slot_released() -> AsyncIterator[None]:
    """Give the request's slot to another while this one waits on another service.

    An order waits on the users and payments services; in the single-app deployment those
    are this very app, whose requests need slots too. Holding the slot across the call
    would let a crowd of orders take every slot and wait for calls that cannot start.
    Waiting on another service costs this worker no CPU, so nothing is lost by letting
    someone else work meanwhile; the request queues again for a slot afterwards.
    """
    slot = _current_slot.get()
    if slot is None or not slot.held:
        yield
        return
    slot.release()
    try:
        yield
    finally:
        await slot.acquire()  # cancelled here, it holds nothing and the middleware frees nothing


class ConcurrencyLimitMiddleware:
    """Pure ASGI: HTTP requests take a slot for their whole life, except while they wait on
    another service (:func:`slot_released`); ``exempt`` paths (health checks, metrics
    scrapes), lifespan and other scopes pass straight through."""

    def __init__(self, app: ASGIApp, limit: int, exempt: frozenset[str] = frozenset()) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.app = app
        self.limit = limit
        self.exempt = exempt
        # Made on first use: a semaphore belongs to the loop that first waits on it, and
        # tests run one app on several loops in turn (a worker on one).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or loop is not self._loop:
            self._loop = loop
            self._slots = asyncio.Semaphore(self.limit)
        return self._slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        slot = _Slot(self._semaphore())
        await slot.acquire()
        token = _current_slot.set(slot)
        try:
            await self.app(scope, receive, send)
        finally:
            _current_slot.reset(token)
            slot.release()
