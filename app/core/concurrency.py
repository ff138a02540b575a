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

The bound should stay at or below ``APP_CACHE_MAX_CONNECTIONS`` (a request beyond that
skips the cache) and well above what the slowest dependency needs in flight to keep the
worker busy (orders waiting on payments over HTTP hold their slot while they wait).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send


class ConcurrencyLimitMiddleware:
    """Pure ASGI: HTTP requests take a slot for their whole life; lifespan and others pass."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.app = app
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(limit)

    def _semaphore(self) -> asyncio.Semaphore:
        # A semaphore belongs to the loop that first waits on it; tests run one app on
        # several loops in turn, a worker on one.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._slots = asyncio.Semaphore(self.limit)
        return self._slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self._semaphore():
            await self.app(scope, receive, send)
