"""Spans: the HTTP server span is the parent of the database and cache spans; /health is absent."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.core.settings import Settings
from app.main import create_app
from tests.apps import running_app


def db_system(span: ReadableSpan) -> str | None:
    attributes = span.attributes or {}
    value = attributes.get("db.system") or attributes.get("db.system.name")
    return str(value) if value is not None else None


def server_spans(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind == SpanKind.SERVER]


async def test_request_spans_parent_the_db_and_cache_spans(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    async with running_app(settings) as api:
        provider = api.app.state.tracer_provider
        assert provider is not None
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        await api.client.post("/api/items", json={"name": "traced"})
        exporter.clear()

        assert (await api.client.get("/api/items/1")).status_code == 200  # a cache miss
        spans = exporter.get_finished_spans()

    [server] = server_spans(spans)
    assert server.name == "GET /api/items/{item_id}"
    assert server.resource.attributes["service.name"] == "fastapi-app"
    children = [
        span for span in spans if span.parent and span.parent.span_id == server.context.span_id
    ]
    by_system: dict[str, list[str]] = {}
    for span in children:
        system = db_system(span)
        if system:
            by_system.setdefault(system, []).append(span.name)
    # The miss: GET from the cache, SELECT from PostgreSQL, SET into the cache.
    assert "SELECT" in by_system.get("postgresql", []), by_system
    assert {"GET", "SET"} <= set(by_system.get("redis", [])), by_system
    assert all(span.context.trace_id == server.context.trace_id for span in spans)
    # No ASGI "http send"/"http receive" sub-spans: one span per request and per call.
    assert all(span is server or db_system(span) for span in spans), [s.name for s in spans]


async def test_write_spans_include_the_invalidation(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    async with running_app(settings) as api:
        api.app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        await api.client.post("/api/notes", json={"title": "t", "content": "c"})
        spans = exporter.get_finished_spans()
    [server] = server_spans(spans)
    kids = {
        (db_system(span), span.name.split()[0])
        for span in spans
        if span.parent and span.parent.span_id == server.context.span_id and db_system(span)
    }
    assert ("postgresql", "INSERT") in kids
    assert any(system == "redis" for system, _ in kids), kids


async def test_health_is_not_traced(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    async with running_app(settings) as api:
        api.app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        for _ in range(3):
            assert (await api.client.get("/health")).status_code == 200
        assert exporter.get_finished_spans() == ()
        # A path merely containing "health" is still traced.
        await api.client.get("/api/items/health")
        assert server_spans(exporter.get_finished_spans())


async def test_service_name_from_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "items-api")
    exporter = InMemorySpanExporter()
    async with running_app(settings) as api:
        api.app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        await api.client.get("/api/items")
    [server] = server_spans(exporter.get_finished_spans())
    assert server.resource.attributes["service.name"] == "items-api"


def test_sdk_disabled_means_no_instrumentation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    app = create_app()
    assert app.state.tracer_provider is None
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)


def test_nothing_exports_before_the_lifespan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating the app (what a Gunicorn master could do before forking) starts no exporter."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    app = create_app()
    provider = app.state.tracer_provider
    assert provider is not None
    assert provider._active_span_processor._span_processors == ()
