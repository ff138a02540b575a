"""Cache-aside on Valkey (or Redis) that fails open.

Keys (``{prefix}`` is the domain, ``items`` or ``notes``):

``{prefix}:{id}``
    One object, as the JSON body the API returns.
``{prefix}:list:version``
    A counter without TTL. Every write to the domain increments it.
``{prefix}:list:v{version}:{skip}:{limit}``
    One list page, stored under the version that was current when it was read. The seed
    names these ``{prefix}:list:{skip}:{limit}``; the version segment is what lets a write
    invalidate every page with one ``INCR`` instead of a ``SCAN``/``KEYS`` over the keyspace:
    readers move on to the new version and the old pages expire by their TTL.

Staleness is bounded by the TTL in every failure case: a page written by a reader that
raced a write lands under the old version, which nobody reads any more; an object
re-cached by a reader that raced a write, a write made while the cache was unreachable,
or a version counter evicted by ``maxmemory`` can serve an old value until its TTL ends.

Fail-open: every cache operation has short connect and socket timeouts and no retries.
Errors are counted by a per-worker circuit breaker; after ``failure_threshold``
consecutive errors spread over at least ``failure_span`` seconds the cache is skipped for
``cooldown`` seconds, then one request probes it. Requests meanwhile go straight to
PostgreSQL. The breaker logs a warning when it opens (and at most once a minute while the
cache stays down), and an info line on recovery, never a line per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, RedisError

from app.core import metrics
from app.core.settings import Settings

logger = logging.getLogger(__name__)

# While the cache stays down, repeat the warning at most this often (seconds).
WARNING_INTERVAL = 60.0


class CircuitBreaker:
    """Closed -> open after N consecutive failures over a minimum span; then one probe
    after each cool-down, which closes it again on success."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __init__(
        self,
        failure_threshold: int,
        cooldown: float,
        min_failure_span: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.min_failure_span = min_failure_span
        self._clock = clock
        self.state = self.CLOSED
        self.failures = 0
        self.opened_total = 0
        self._streak_started = 0.0
        self._opened_at = 0.0
        self._probe_started = 0.0
        self._last_warning = float("-inf")

    def allow(self) -> bool:
        """Whether this request may use the cache."""
        if self.state == self.CLOSED:
            return True
        now = self._clock()
        if self.state == self.OPEN:
            if now - self._opened_at < self.cooldown:
                return False
            self.state = self.HALF_OPEN
            self._probe_started = now
            return True
        # Half-open: one probe at a time. A probe that never reported back (its request
        # was cancelled) is given up after a cool-down so the breaker cannot stay stuck.
        if now - self._probe_started >= self.cooldown:
            self._probe_started = now
            return True
        return False

    def record_success(self) -> None:
        if self.state != self.CLOSED:
            logger.info("cache reachable again; using it")
            metrics.cache_breaker(is_open=False)
        self.state = self.CLOSED
        self.failures = 0

    def record_failure(self, exc: BaseException) -> None:
        now = self._clock()
        if self.failures == 0:
            self._streak_started = now
        self.failures += 1
        if self.state == self.CLOSED and (
            self.failures < self.failure_threshold
            # A burst of failures at one instant is more likely this worker's event loop
            # stalling past the timeouts than the cache going away: wait for a streak
            # that lasts, so a busy worker does not push its reads onto PostgreSQL.
            or now - self._streak_started < self.min_failure_span
        ):
            return
        was_closed = self.state == self.CLOSED
        self.state = self.OPEN
        metrics.cache_breaker(is_open=True)
        self._opened_at = now
        self.opened_total += 1
        if was_closed or now - self._last_warning >= WARNING_INTERVAL:
            self._last_warning = now
            logger.warning(
                "cache unavailable (%s: %s); serving from the database, retrying in %.1fs",
                type(exc).__name__,
                exc,
                self.cooldown,
            )


class CacheKeys:
    """The key names of one domain (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.list_version = f"{prefix}:list:version"

    def one(self, object_id: int) -> str:
        return f"{self.prefix}:{object_id}"

    def page(self, version: int, skip: int, limit: int) -> str:
        return f"{self.prefix}:list:v{version}:{skip}:{limit}"


class Cache:
    """Byte values in Valkey with a TTL; every method returns quietly when the cache fails."""

    def __init__(self, client: Redis | None, ttl: int, breaker: CircuitBreaker) -> None:
        self.client = client
        self.ttl = ttl
        self.breaker = breaker

    @classmethod
    def from_settings(cls, settings: Settings) -> Cache:
        breaker = CircuitBreaker(
            settings.cache_failure_threshold,
            settings.cache_cooldown,
            settings.cache_failure_span,
        )
        if not settings.cache_enabled or settings.cache_pass is None:
            return cls(None, settings.cache_ttl, breaker)
        pool = ConnectionPool(
            host=settings.cache_host,
            port=settings.cache_port,
            db=settings.cache_db,
            password=settings.cache_pass.get_secret_value() or None,
            socket_connect_timeout=settings.cache_connect_timeout,
            socket_timeout=settings.cache_socket_timeout,
            # Retrying a dead cache only multiplies the time a request waits for it.
            retry=Retry(NoBackoff(), 0),
            max_connections=settings.cache_max_connections,
            client_name="webstack-app",
        )
        client = Redis(connection_pool=pool)
        return cls(client, settings.cache_ttl, breaker)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose(close_connection_pool=True)

    async def _run(self, operation: Callable[[Redis], Any]) -> tuple[bool, Any]:
        """Run ``operation`` through the breaker: ``(True, result)`` or ``(False, None)``."""
        client = self.client
        if client is None or not self.breaker.allow():
            return False, None
        try:
            result = await operation(client)
        except MaxConnectionsError:
            # This worker's pool is busy, the cache is not at fault: skip it this time.
            return False, None
        except (RedisError, OSError) as exc:
            self.breaker.record_failure(exc)
            return False, None
        self.breaker.record_success()
        return True, result

    async def execute(self, operation: Callable[[Redis], Any]) -> tuple[bool, Any]:
        """Any other command through the breaker (the users' login lockout)."""
        return await self._run(operation)

    async def ping(self) -> bool:
        ok, _ = await self._run(lambda client: client.ping())
        return ok

    async def get(self, key: str) -> bytes | None:
        ok, value = await self._run(lambda client: client.get(key))
        metrics.cache_read(hit=value is not None if ok else None)
        return cast(bytes | None, value)  # decode_responses is off: GET answers bytes

    async def set(self, key: str, value: bytes) -> None:
        await self._run(lambda client: client.set(key, value, ex=self.ttl))

    async def list_version(self, keys: CacheKeys) -> int | None:
        """The current list version of a domain, or ``None`` when the cache is unusable."""
        ok, value = await self._run(lambda client: client.get(keys.list_version))
        if not ok:
            return None
        return int(value) if value is not None else 0

    async def invalidate(self, keys: CacheKeys, object_id: int | None = None) -> None:
        """Drop one object (if given) and every list page of the domain, in one round trip."""

        async def operation(client: Redis) -> Any:
            pipe = client.pipeline(transaction=False)
            if object_id is not None:
                pipe.delete(keys.one(object_id))
            pipe.incr(keys.list_version)
            return await pipe.execute()

        await self._run(operation)

    async def get_or_load(
        self, key: str, load: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        """Cache-aside read of one value; ``load`` returns ``None`` for "does not exist"."""
        value = await self.get(key)
        if value is not None:
            return value
        value = await load()
        if value is not None:
            await self.set(key, value)
        return value

    async def page_or_load(
        self, keys: CacheKeys, skip: int, limit: int, load: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """Cache-aside read of a list page, under the version current before the load."""
        version = await self.list_version(keys)
        if version is not None:
            value = await self.get(keys.page(version, skip, limit))
            if value is not None:
                return value
        value = await load()
        if version is not None:
            await self.set(keys.page(version, skip, limit), value)
        return value
