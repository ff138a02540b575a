"""The OpenTelemetry Collector: healthy, and spans sent over OTLP gRPC and HTTP reach it."""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest
from conftest import assert_units_active
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

UNIT = "otelcol-contrib.service"


def test_unit_enabled_and_active(host):
    assert_units_active(host, UNIT)


def test_health_check_answers(address):
    with urllib.request.urlopen(f"http://{address}:13133/", timeout=5) as response:
        assert response.status == 200


def test_config_validates(host):
    with host.sudo():
        result = host.run(
            "/usr/local/bin/otelcol-contrib validate --config=/etc/otelcol-contrib/config.yaml"
        )
    assert result.rc == 0, result.stderr


def send_span(exporter, name: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "molecule-verify"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("verify").start_as_current_span(name):
        pass
    provider.shutdown()


def wait_for_journal(host, needle: str, seconds: float = 20) -> bool:
    # The collector batches for up to 5 s before the debug exporter prints.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with host.sudo():
            journal = host.run(f"journalctl -u {UNIT} --no-pager --since=-5min -o cat").stdout
        if needle in journal:
            return True
        time.sleep(1)
    return False


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_span_reaches_the_collector(host, address, protocol):
    name = f"verify-{protocol}-{uuid.uuid4().hex[:12]}"
    if protocol == "grpc":
        exporter = GrpcExporter(endpoint=f"http://{address}:4317", insecure=True, timeout=5)
    else:
        exporter = HttpExporter(endpoint=f"http://{address}:4318/v1/traces", timeout=5)
    send_span(exporter, name)
    assert wait_for_journal(host, name), f"span {name} not in the collector's journal"
