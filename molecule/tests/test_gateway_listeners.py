"""The seed-001 gateway: the same routes on :80, :443 (TLS) and :8080, asked from outside.

The client is this controller, reaching the host over the test bed's bridge like any
client. :443 carries the host's self-signed certificate: the client trusts that one
certificate and checks its names (the host's address among them) like any other. The
seed-001 request shapes themselves are other tests' subject.
"""

from __future__ import annotations

import ssl

import httpx
import pytest

SERVICES = ("users", "orders", "payments")
SCHEMES = ("http-80", "https-443", "http-8080")


@pytest.fixture(scope="module")
def trust(host) -> ssl.SSLContext:
    """A TLS client context trusting the host's self-signed certificate, names checked."""
    certificate = host.file("/etc/nginx/tls/gateway.crt").content_string
    return ssl.create_default_context(cadata=certificate)


@pytest.fixture(scope="module", params=SCHEMES)
def gateway(request, address, trust):
    base = {
        "http-80": f"http://{address}",
        "https-443": f"https://{address}",
        "http-8080": f"http://{address}:8080",
    }[request.param]
    with httpx.Client(base_url=base, timeout=30, verify=trust) as client:
        yield client


def test_health(gateway):
    answer = gateway.get("/health")
    assert answer.status_code == 200
    assert answer.json()["status"] in ("ok", "healthy")


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_docs(gateway, service):
    docs = gateway.get(f"/{service}/docs")
    assert docs.status_code == 200
    assert f"/{service}/openapi.json" in docs.text
    assert gateway.get(f"/{service}/openapi.json").json()["paths"]


def test_overview_page_links_every_deployed_service(host, gateway):
    page = gateway.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    deployed = host.ansible.get_variables()["webstack_services"]
    for service in deployed:
        assert f'href="{service["prefix"]}/docs"' in page.text, service["name"]
    assert page.text.count("<tr id=") == len(deployed)


@pytest.mark.parametrize("service", SERVICES)
def test_short_doc_addresses_redirect_on_the_same_scheme_and_port(gateway, service):
    alias = f"/{service[:-1]}-docs"
    answer = gateway.get(alias)
    assert answer.status_code == 301
    assert answer.headers["location"] == f"/{service}/docs"
    followed = gateway.get(alias, follow_redirects=True)
    assert followed.status_code == 200
    assert followed.url == gateway.base_url.join(f"/{service}/docs")


def test_the_app_sees_the_scheme_the_client_used(gateway):
    # X-Forwarded-Proto reaches the services: their OpenAPI "servers" and redirects use it.
    answer = gateway.get("/users/docs")
    assert answer.status_code == 200
    scheme = gateway.base_url.scheme
    assert answer.url.scheme == scheme
