"""Prometheus metrics of the HTTP server, summed over every Gunicorn worker.

``GET /metrics`` answers in the Prometheus text format:

``http_requests_total{method, route, status}``
    Requests answered. ``route`` is the route's template as the public sees it
    (``/orders/{order_id}``, the same whether the domain is served alone behind the
    gateway or in one app); requests that matched no route count as ``<unmatched>``, so
    scanners cannot create a series per path.
``http_request_duration_seconds{method, route}``
    A histogram of the time to the end of the response.
``http_requests_in_progress{method}``
    Requests being answered now (summed over the live workers).

``/metrics`` itself is not counted. Methods outside the standard set count as ``other``.

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
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "HTTP requests being answered",
    ["method"],
    multiprocess_mode="livesum",
)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        return path[len(root_path) :]
    return path


def route_label(scope: Scope) -> str:
    """The template of the route the router chose, as published (root path included)."""
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    root_path = scope.get("root_path", "")
    if root_path and path == "/":
        return root_path  # a service's collection: /orders, as in the single app
    return root_path + path


class MetricsMiddleware:
    """Counts and times every HTTP request but the scrapes (pure ASGI: no body copies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) == METRICS_PATH:
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
            route = route_label(scope)
            REQUESTS.labels(method, route, str(status)).inc()
            DURATION.labels(method, route).observe(elapsed)


def _exposition() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics(request: Request) -> Response:
    # Reading every worker's files is blocking I/O: off the event loop.
    return Response(await run_in_threadpool(_exposition), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    app.add_middleware(MetricsMiddleware)
    app.add_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
