"""Prometheus metrics of the HTTP server, summed over every Gunicorn worker.

``GET /metrics`` answers in the Prometheus text format:

``http_requests_total{method, route, status}``
    Requests answered. ``route`` is the route's template as the public sees it
    (``/orders/{order_id}``, in one app as in a service of its own; the docs as ``/docs``,
    a service's as ``/users/docs``); requests that matched no route count as
    ``<unmatched>``, so scanners cannot create a series per path.
``http_request_duration_seconds{method, route, status}``
    A histogram of the time to the end of the response.
``http_requests_in_progress{method}``
    Requests being answered now (summed over the live workers).
``webstack_cache_requests_total{result}``
    Cache reads: ``hit``, ``miss``, or ``skipped`` (the breaker is open, the cache failed
    or this worker's connections were all busy: the read went to PostgreSQL).
``webstack_cache_breaker_open``
    1 while the cache breaker of any live worker is open (or half-open), else 0.
``webstack_db_pool_connections_in_use``
    Database connections checked out of the workers' pools now (summed over the workers).
``webstack_orders_total{status}``
    Orders placed, by the status they ended with (``confirmed``, ``failed``).
``webstack_payments_total{outcome}``
    Payments decided (``completed``, ``failed``) and refunded (``refunded``).

``/metrics`` itself is not counted. Methods outside the standard set count as ``other``.
Every label takes values from a fixed set (methods, route templates, status codes, the
enums above): the number of series does not grow with traffic.

Why prometheus_client in multiprocess mode rather than OpenTelemetry metrics: a scrape of
one service answers for all its workers from files they share, with no collector in the
path and no per-worker series to aggregate afterwards; OTel metrics would push one
cumulative stream per worker process, which the collector's Prometheus exporter exposes as
separate series (or needs extra processors to merge), and every worker restart starts a new
one. Under Gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` must name a directory of the service's
own before ``prometheus_client`` is imported: ``app/gunicorn_conf.py`` sees to that,
empties it when the master starts and drops a dead worker's live gauges. Without the
variable (one process: tests, ``uvicorn``), the process's own registry is served.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from sqlalchemy.pool import ConnectionPoolEntry, Pool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"

REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["method", "route", "status"])
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "HTTP requests being answered",
    ["method"],
    multiprocess_mode="livesum",
)
CACHE_REQUESTS = Counter(
    "webstack_cache_requests_total", "Cache reads by result (hit, miss, skipped)", ["result"]
)
CACHE_BREAKER_OPEN = Gauge(
    "webstack_cache_breaker_open",
    "1 while the cache circuit breaker of a live worker is open",
    multiprocess_mode="livemax",
)
DB_POOL_IN_USE = Gauge(
    "webstack_db_pool_connections_in_use",
    "Database connections checked out of the pools",
    multiprocess_mode="livesum",
)
ORDERS = Counter("webstack_orders_total", "Orders placed, by final status", ["status"])
PAYMENTS = Counter("webstack_payments_total", "Payments by outcome", ["outcome"])


# Per app: the path of each plain Starlette route (the docs, /openapi.json), by endpoint.
# FastAPI's router leaves scope["route"] only for its own API routes.
_ENDPOINT_PATHS: weakref.WeakKeyDictionary[Any, dict[Callable[..., Any], str]] = (
    weakref.WeakKeyDictionary()
)


def _endpoint_path(scope: Scope) -> str | None:
    app, endpoint = scope.get("app"), scope.get("endpoint")
    if app is None or endpoint is None:
        return None
    paths = _ENDPOINT_PATHS.get(app)
    if paths is None:
        paths = {
            route.endpoint: route.path
            for route in getattr(app, "routes", ())
            if isinstance(getattr(route, "path", None), str) and hasattr(route, "endpoint")
        }
        _ENDPOINT_PATHS[app] = paths
    return paths.get(endpoint)


def route_label(scope: Scope) -> str:
    """The template of the route the router chose: its public path (``/orders/{order_id}``)."""
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        path = _endpoint_path(scope)
    return UNMATCHED if path is None else path


class MetricsMiddleware:
    """Counts and times every HTTP request but the scrapes (pure ASGI: no body copies)."""

    def __init__(self, app: ASGIApp, scrape_path: str = METRICS_PATH) -> None:
        self.app = app
        self.scrape_path = scrape_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == self.scrape_path:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        status = 500  # unless a response starts: an exception becomes a 500 further out

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_progress = IN_PROGRESS.labels(method)
        in_progress.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            elapsed = time.perf_counter() - started
            in_progress.dec()
            route, code = route_label(scope), str(status)
            REQUESTS.labels(method, route, code).inc()
            DURATION.labels(method, route, code).observe(elapsed)


def cache_read(hit: bool | None) -> None:
    """A cache read: a hit, a miss, or ``None`` when the cache was skipped or failed."""
    CACHE_REQUESTS.labels("skipped" if hit is None else "hit" if hit else "miss").inc()


def cache_breaker(is_open: bool) -> None:
    CACHE_BREAKER_OPEN.set(1 if is_open else 0)


def order_placed(status: str) -> None:
    ORDERS.labels(str(status)).inc()


def payment(outcome: str) -> None:
    PAYMENTS.labels(str(outcome)).inc()


# Every pool of the process (one engine per worker): connections out of it now. A checkout
# that fails (the database unreachable) also fires "checkin" without a "checkout": only a
# connection this listener saw leave is counted back, or each failed request during an
# outage would drive the gauge further below zero.
_CHECKED_OUT = "webstack_checked_out"


@event.listens_for(Pool, "checkout")
def _connection_out(_dbapi: object, record: ConnectionPoolEntry, _proxy: object) -> None:
    record.record_info[_CHECKED_OUT] = True
    DB_POOL_IN_USE.inc()


@event.listens_for(Pool, "checkin")
def _connection_back(_dbapi: object, record: ConnectionPoolEntry) -> None:
    if record.record_info.pop(_CHECKED_OUT, False):
        DB_POOL_IN_USE.dec()


def _exposition() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics(request: Request) -> Response:
    # Reading every worker's files is blocking I/O: off the event loop.
    return Response(await run_in_threadpool(_exposition), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, path: str = METRICS_PATH) -> None:
    """Count every request but the scrapes, which ``path`` answers (``{root path}/metrics``)."""
    app.add_middleware(MetricsMiddleware, scrape_path=path)
    app.add_route(path, metrics, methods=["GET"], include_in_schema=False)
