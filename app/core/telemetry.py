"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables.

Read here: ``OTEL_SDK_DISABLED`` (``true`` turns tracing and instrumentation off),
``OTEL_SERVICE_NAME`` (default ``fastapi-app``), ``OTEL_TRACES_EXPORTER`` (``otlp``, the
default, ``console`` or ``none``, comma separated). The OTLP gRPC exporter itself reads
``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4317``), ``..._HEADERS``,
``..._TIMEOUT`` and the rest of the standard set; the SDK reads ``OTEL_RESOURCE_ATTRIBUTES``
and the ``OTEL_BSP_*`` batch settings.

Two phases, because of Gunicorn's fork:

* :func:`instrument_app`, at app creation, builds a :class:`TracerProvider` with no span
  processor (no thread, no socket) and wraps the FastAPI app, whose middleware stack must
  be in place before the first request.
* :func:`start`, in the lifespan (inside each worker), adds the batch processor and its
  exporter and instruments the worker's engine and cache client. :func:`stop` flushes.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "fastapi-app"
# Matched with re.search against scheme://host/path (no query string).
EXCLUDED_URLS = r"^[a-z]+://[^/]*/health/?$"


def tracing_enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def _resource() -> Resource:
    resource = Resource.create({})
    name = str(resource.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def instrument_app(app: FastAPI) -> TracerProvider | None:
    """Wrap ``app`` with the HTTP instrumentation; returns the (still silent) provider."""
    if not tracing_enabled():
        return None
    provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
    excluded = EXCLUDED_URLS
    extra = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "").strip()
    if extra:
        excluded = f"{excluded},{extra}"
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=excluded,
        # One span per request, not three: the ASGI send/receive spans say nothing the
        # server span does not, and cost as much to make and export.
        exclude_spans=["receive", "send"],
    )
    return provider


def _exporters() -> list[SpanExporter]:
    names = [
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if name.strip()
    ]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            # Imported here: grpc is heavy and must not start anything before the fork.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            logger.warning("OTEL_TRACES_EXPORTER=%s is not supported here; ignored", name)
    return exporters


def start(provider: TracerProvider | None, engine: AsyncEngine, redis: Redis | None) -> None:
    """Per worker: start exporting and trace the database and cache clients."""
    if provider is None:
        return
    for exporter in _exporters():
        if isinstance(exporter, ConsoleSpanExporter):
            # Printed spans are for debugging: no batching delay.
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, tracer_provider=provider)
    if redis is not None:
        RedisInstrumentor.instrument_client(redis, tracer_provider=provider)


def stop(provider: TracerProvider | None) -> None:
    """Flush and stop exporting; undo the process-wide SQLAlchemy instrumentation."""
    if provider is None:
        return
    SQLAlchemyInstrumentor().uninstrument()
    provider.shutdown()
