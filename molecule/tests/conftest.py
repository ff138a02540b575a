"""Shared fixtures for the testinfra checks that run against the Molecule hosts."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dotenv import dotenv_values

from tests.hosts import role_defaults
from tests.hosts import security_headers as declared_security_headers


@pytest.fixture(scope="session")
def security_headers() -> dict[str, str]:
    """The headers nginx adds to every answer (lower-case names), from roles/nginx."""
    return declared_security_headers()


def read_settings(host, path: str = "/etc/webstack/app.env") -> dict[str, str]:
    """A settings file of the app's, read as the app reads it (python-dotenv, nothing
    expanded: app/core/settings.py)."""
    with host.sudo():
        text = host.file(path).content_string
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {name: value for name, value in values.items() if value is not None}


def assert_units_active(host, *units: str) -> None:
    """Each unit enabled (starts at boot) and running now."""
    for unit in units:
        service = host.service(unit)
        assert service.is_enabled, f"{unit} is not enabled"
        assert service.is_running, f"{unit} is not running"


@pytest.fixture(scope="module")
def address(host) -> str:
    """The host's address on the test bed's bridge, as clients reach it."""
    return host.ansible.get_variables()["ansible_host"]


@pytest.fixture(scope="module")
def controller(address) -> str:
    """The controller's address on the test bed's bridge (its first host), where the
    checks' own requests come from."""
    return address.rsplit(".", 1)[0] + ".1"


@pytest.fixture(scope="module")
def api(address):
    """A client of the gateway's plain-HTTP listener, :8080."""
    with httpx.Client(base_url=f"http://{address}:8080", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def in_container(host) -> bool:
    """True on a container sharing its kernel with the machine that runs it."""
    return host.run("systemd-detect-virt --container").rc == 0


def _secrets_dir() -> Path:
    return Path(os.environ.get("WEBSTACK_TESTBED_DIR", "/var/lib/webstack-testbed")) / "secrets"


@pytest.fixture(scope="session")
def secret():
    """Read a sandbox secret the way the inventory does (generated on the controller)."""

    def read(name: str) -> str:
        return (_secrets_dir() / name).read_text().split()[0]

    return read


@pytest.fixture(scope="session")
def db_password(secret):
    """A service's database password, from the file the sandbox inventory generates for it
    (inventories/sandbox/group_vars/all/main.yml): the app service's role, appuser, keeps
    the file it had before each service had its own."""

    def read(service: str) -> str:
        return secret("postgresql_app_password" if service == "app" else f"db_password_{service}")

    return read


# The collector's file sink (roles/otelcol): each batch of spans one line of OTLP JSON in
# <otelcol_file_dir>/traces.jsonl, rotated to traces-<time>-size.jsonl beside it.
OTELCOL = role_defaults("otelcol")
SINK = OTELCOL["otelcol_file_dir"]
TRACES = f"{SINK}/traces*.jsonl"


def batch_timeout() -> float:
    """Seconds the collector's batch processor holds spans at most before it sends them."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", OTELCOL["otelcol_batch_timeout"])
    assert match, OTELCOL["otelcol_batch_timeout"]
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def _attributes(items: list[dict]) -> dict[str, Any]:
    """OTLP JSON's [{key, value: {stringValue: ...}}] as {key: value}."""
    return {item["key"]: next(iter(item.get("value", {}).values()), None) for item in items}


def parse_otlp_spans(text: str) -> list[dict[str, Any]]:
    """The spans of OTLP JSON lines (resourceSpans -> scopeSpans -> spans), each with its
    attributes as a dict and its resource's service.name as "service". A last line the
    collector is still writing is left for the next read."""
    spans: list[dict[str, Any]] = []
    # Only "\n" ends a line: str.splitlines() also breaks at U+0085 and U+2028, which JSON
    # strings may hold unescaped (the gateway's schemathesis run sends such paths).
    lines = [line for line in text.split("\n") if line]
    for number, line in enumerate(lines, start=1):
        try:
            batch = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise
        for resource_spans in batch.get("resourceSpans", []):
            resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    spans.append(
                        {
                            **span,
                            "attributes": _attributes(span.get("attributes", [])),
                            "service": resource.get("service.name"),
                        }
                    )
    return spans


def sink_spans(host, needle: str) -> list[dict[str, Any]]:
    """Spans of every batch in the collector's file sink that mentions ``needle`` (a span
    name, a path, a trace id); grep on the host keeps the transfer small."""
    # The directory comes with the unit; the file with the collector's first batch.
    script = (
        f'cd {shlex.quote(SINK)} || exit 2; set -- traces*.jsonl; [ -e "$1" ] || exit 1; '
        f'grep -h -F -e {shlex.quote(needle)} -- "$@"'
    )
    with host.sudo():
        result = host.run(script)
    assert result.rc in (0, 1), f"cannot read the collector's file sink: {result.stderr}"
    return parse_otlp_spans(result.stdout)


def wait_for_spans(host, needle: str, found, what: str) -> list[dict[str, Any]]:
    """The sink's spans for ``needle`` once ``found(spans)`` holds. A span waits in the
    app's batch span processor (OTEL_BSP_SCHEDULE_DELAY, 5 s by default), then in the
    collector's batch processor (its timeout) before it is written: the wait is bounded
    by twice that timeout and a margin."""
    deadline = time.monotonic() + 2 * batch_timeout() + 10
    while True:
        spans = sink_spans(host, needle)
        if found(spans) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found(spans), f"{what}: not in the collector's file sink ({TRACES}) in time"
    return spans
