"""Fixtures shared by the nginx scenario's checks."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from tests.hosts import security_headers as declared_security_headers

# One socket per service of the scenario's map (molecule.yml): app, users, orders, payments.
SERVICE_SOCKETS = tuple(
    f"/run/webstack/{name}.sock" for name in ("app", "users", "orders", "payments")
)


def sh(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


def curl_response(host, *curl_args: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and body (as text) of one curl call on the host;
    ``curl_args`` must include ``-D -`` so the head comes first on stdout."""
    result = host.run(sh("curl", *curl_args))
    assert result.rc == 0, result.stderr
    head, _, body = result.stdout_bytes.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body.decode(errors="replace")


def write_file(host, path: str, content: str) -> None:
    with host.sudo():
        host.check_output(
            f"install -d -m 0755 {shlex.quote(str(Path(path).parent))} && "
            f"printf %s {shlex.quote(content)} > {shlex.quote(path)} && chmod 0644 {path}"
        )


@pytest.fixture(scope="module")
def echo_app(host):
    """A stand-in for the services on their Unix sockets, run as a transient unit."""
    script = (Path(__file__).parent / "echo_app.py").read_text()
    write_file(host, "/run/verify-echo-app.py", script)
    with host.sudo():
        host.run("systemctl stop verify-echo-app.service")
        host.check_output("install -d -m 0755 /run/webstack")
        host.check_output(
            "systemd-run --unit=verify-echo-app --collect "
            f"python3 /run/verify-echo-app.py {' '.join(SERVICE_SOCKETS)}"
        )
        for _ in range(50):
            if all(host.socket(f"unix://{s}").is_listening for s in SERVICE_SOCKETS):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the echo app did not come up")
    yield
    with host.sudo():
        host.run("systemctl stop verify-echo-app.service")
        host.run(f"rm -f {' '.join(SERVICE_SOCKETS)} /run/verify-echo-app.py")


@pytest.fixture(scope="session")
def security_headers() -> dict[str, str]:
    """The headers nginx adds to every answer (lower-case names), as roles/nginx declares
    them by default: compared against, never restated."""
    return declared_security_headers()
