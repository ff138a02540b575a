"""Every service's OpenAPI schema says what it does through nginx on the deployed host.

The checks of tests/openapi_checks.py (schemathesis: every operation of each schema, valid
and invalid requests, writes replayed by their Idempotency-Key) run against the gateway of
the deployed stack: its routes, body limits, hidden paths and headers in front of the real
services under Gunicorn, PostgreSQL and Valkey. tests/test_openapi_conformance.py runs the
same checks in-process, where a failure is quicker to debug.

The requests reach nginx from the host's own loopback, through an SSH tunnel: the sandbox
exempts that address from the per-address rate limits (inventories/sandbox/group_vars/
proxy.yml), which have checks of their own (test_stack.py). Otherwise the tenth login in a
second would get nginx's 429, which no service's schema has a reason to document.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis

from tests.openapi_checks import check_schema, report
from tests.stack import PASSWORD

# The listener of the gateway the tunnel leads to: plain HTTP, as the seeds' examples use.
GATEWAY_PORT = 8080


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def tunnel(variables: dict) -> Iterator[str]:
    """ssh -L from a free port here to the gateway on the host's loopback; its base URL."""
    port = free_port()
    command = [
        "ssh",
        "-N",
        "-i",
        variables["ansible_private_key_file"],
        "-p",
        str(variables.get("ansible_port", 22)),
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        "-L",
        f"127.0.0.1:{port}:127.0.0.1:{GATEWAY_PORT}",
        f"{variables['ansible_user']}@{variables['ansible_host']}",
    ]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"ssh tunnel ended with status {process.returncode}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "ssh tunnel did not open within 20 s"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(host) -> Iterator[str]:
    with tunnel(host.ansible.get_variables()) as base:
        yield base


@pytest.fixture(scope="module")
def token(gateway) -> str:
    """A bearer token of an account of this run's own, made through the gateway."""
    name = f"st-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=gateway, timeout=30) as client:
        body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
        registered = client.post("/users/register", json=body)
        assert registered.status_code == 201, registered.text
        login = client.post("/users/login", json={"username": name, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return str(login.json()["access_token"])


def test_every_schema_says_what_the_gateway_does(host, gateway: str, token: str) -> None:
    """Each service of the site's service map, by its prefix; what disagreed, by service."""
    problems = []
    for service in host.ansible.get_variables()["webstack_services"]:
        prefix = service.get("prefix", "")
        schema = schemathesis.openapi.from_url(f"{gateway}{prefix}/openapi.json")
        operations, findings = check_schema(schema, {"Authorization": f"Bearer {token}"})
        assert len(operations) >= 2, f"{service['name']}: {len(operations)} operations"
        if findings:
            problems.append(f"service {service['name']}: {report(findings)}")
    assert not problems, "\n\n".join(problems)
