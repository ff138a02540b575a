"""The OpenTelemetry Collector: healthy; spans sent over OTLP gRPC and HTTP reach its file
sink; the journal gets a line per batch, not per span."""

from __future__ import annotations

import re
import shlex
import time
import urllib.request
import uuid

import pytest
import yaml
from conftest import OTELCOL, assert_units_active, batch_timeout, wait_for_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

UNIT = "otelcol-contrib.service"
SERVER = 2  # OTLP's SPAN_KIND_SERVER


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


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_span_reaches_the_collector(host, address, protocol):
    name = f"verify-{protocol}-{uuid.uuid4().hex[:12]}"
    if protocol == "grpc":
        exporter = GrpcExporter(endpoint=f"http://{address}:4317", insecure=True, timeout=5)
    else:
        exporter = HttpExporter(endpoint=f"http://{address}:4318/v1/traces", timeout=5)
    send_span(exporter, name)
    spans = wait_for_spans(
        host, name, lambda spans: any(s["name"] == name for s in spans), f"span {name}"
    )
    (span,) = [s for s in spans if s["name"] == name]
    assert span["service"] == "molecule-verify"
    assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"]), span
    assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"]), span


def test_the_file_sink_is_private_and_rotated(host):
    with host.sudo():
        # The directory is the fence: the exporter creates its files 0644.
        sink = host.file(OTELCOL["otelcol_file_dir"])
        assert (sink.user, sink.group, sink.mode) == ("otelcol", "otelcol", 0o700)
        assert host.file(f"{OTELCOL['otelcol_file_dir']}/traces.jsonl").user == "otelcol"
    with host.sudo("nobody"):
        assert host.run(f"cat {OTELCOL['otelcol_file_dir']}/traces.jsonl").rc != 0
    with host.sudo():
        config = yaml.safe_load(host.file("/etc/otelcol-contrib/config.yaml").content_string)
    assert config["exporters"]["file/traces"]["rotation"] == {
        "max_megabytes": OTELCOL["otelcol_file_max_megabytes"],
        "max_backups": OTELCOL["otelcol_file_max_backups"],
    }
    assert config["exporters"]["debug"]["verbosity"] == "basic"


def journal_cursor(host) -> str:
    with host.sudo():
        out = host.check_output(f"journalctl -u {UNIT} -n 1 --show-cursor --no-pager -o cat")
    return out.rsplit("-- cursor: ", 1)[1].strip()


def test_the_journal_gets_a_line_per_batch_not_per_span(host, api):
    # The journal floor (roles/otelcol/README.md): at verbosity basic the debug exporter
    # writes one line per batch the batch processor sends, however many spans it holds; at
    # normal it writes a line per span, at detailed some twenty. N traced requests in a
    # few seconds must leave a handful of lines, far fewer than their spans.
    requests = 200
    cursor = journal_cursor(host)
    started = time.monotonic()
    marker = f"floor{uuid.uuid4().hex[:10]}"
    for number in range(requests):
        response = api.get("/api/items", params={"limit": 1, "floor": f"{marker}-{number}"})
        assert response.status_code == 200

    # Every request is still traced: a server span for each, in the file.
    def traced(spans) -> set[str]:
        return {
            number
            for span in spans
            if span.get("kind") == SERVER
            for value in span["attributes"].values()
            if isinstance(value, str)
            for number in re.findall(rf"{marker}-(\d+)", value)
        }

    spans = wait_for_spans(
        host, marker, lambda spans: len(traced(spans)) == requests, f"{requests} server spans"
    )
    elapsed = time.monotonic() - started
    with host.sudo():
        journal = host.check_output(
            f"journalctl -u {UNIT} --after-cursor={shlex.quote(cursor)} --no-pager -o cat"
        )
    lines = [line for line in journal.splitlines() if line.strip()]
    # Three pipelines, each sending a batch per timeout and one per send_batch_size items.
    batches = (
        3 * (int(elapsed / batch_timeout()) + 2) + len(spans) // OTELCOL["otelcol_batch_send_size"]
    )
    print(
        f"journal floor: {requests} requests, {len(spans)} spans in their batches, "
        f"{elapsed:.1f} s, "
        f"{len(lines)} collector journal lines (bound {batches})"
    )
    assert len(lines) <= batches, f"{len(lines)} journal lines for {requests} requests:\n{journal}"
