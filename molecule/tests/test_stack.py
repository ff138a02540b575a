"""The whole stack through nginx on :8080, as a client sees it (the seed's curl examples)."""

from __future__ import annotations

import shlex
import time
import uuid

import httpx
import pytest
from conftest import assert_units_active, wait_for_spans

UNITS = (
    "nginx.service",
    "webstack-app.socket",
    "webstack-app.service",
    "postgresql@18-main.service",
    "valkey-server.service",
    "otelcol-contrib.service",
)
LIMITED_ADDRESS = "127.0.0.2"  # not on the sandbox's nginx_rate_limit_exempt list


def test_every_unit_enabled_and_active(host):
    assert_units_active(host, *UNITS)


def last_page(api, path: str) -> list[dict]:
    """The last page of a list ordered by id (the newest rows), found by bisecting `skip`."""
    low, high = 0, 100
    while api.get(path, params={"skip": high, "limit": 100}).json():
        low, high = high, high * 2
    while high - low > 100:
        middle = (low + high) // 2
        if api.get(path, params={"skip": middle, "limit": 100}).json():
            low = middle
        else:
            high = middle
    return api.get(path, params={"skip": low, "limit": 100}).json()


def test_items_as_in_the_seed(api):
    created = api.post("/api/items", json={"name": "Widget", "description": "A test widget"})
    assert created.status_code == 201
    item = created.json()
    assert set(item) == {"id", "name", "description", "created_at", "updated_at"}
    assert (item["name"], item["description"]) == ("Widget", "A test widget")

    assert item in last_page(api, "/api/items")
    assert api.get(f"/api/items/{item['id']}").json() == item

    time.sleep(0.01)
    patched = api.patch(f"/api/items/{item['id']}", json={"description": "Updated description"})
    assert patched.status_code == 200
    assert patched.json()["description"] == "Updated description"
    assert patched.json()["name"] == "Widget"
    assert patched.json()["updated_at"] > item["updated_at"]
    assert api.get(f"/api/items/{item['id']}").json()["description"] == "Updated description"

    deleted = api.delete(f"/api/items/{item['id']}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert api.get(f"/api/items/{item['id']}").status_code == 404


def test_notes_as_in_the_seed(api):
    body = {"title": "Meeting notes", "content": "Discussed project timeline and milestones."}
    created = api.post("/api/notes", json=body)
    assert created.status_code == 201
    note = created.json()
    assert set(note) == {"id", "title", "content", "created_at"}
    assert note in last_page(api, "/api/notes")
    assert api.get(f"/api/notes/{note['id']}").json() == note
    assert api.delete(f"/api/notes/{note['id']}").status_code == 204
    assert api.get(f"/api/notes/{note['id']}").status_code == 404


def test_health_and_docs(api):
    assert api.get("/health").json()["status"] == "ok"
    assert "swagger-ui" in api.get("/docs").text.lower()
    assert "redoc" in api.get("/redoc").text.lower()
    assert "/api/items" in api.get("/openapi.json").json()["paths"]


def test_bad_input_is_a_4xx(api):
    assert (
        api.post(
            "/api/items", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert api.post("/api/items", json={"name": "x" * 256}).status_code == 422
    assert api.get("/api/items", params={"skip": -1}).status_code == 422
    assert api.get("/api/items/99999999999").status_code in (404, 422)


@pytest.fixture(scope="module")
def big_list(api):
    for n in range(8):
        api.post("/api/items", json={"name": f"compress-{n}", "description": "x" * 40})
    return "/api/items?limit=100"


def test_brotli_for_br_clients(api, big_list):
    response = api.get(big_list, headers={"Accept-Encoding": "br"})
    assert response.headers["content-encoding"] == "br"


def test_gzip_for_gzip_only_clients(api, big_list):
    response = api.get(big_list, headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"


def test_identity_without_accept_encoding(api, big_list):
    response = api.get(big_list, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in response.headers
    assert len(response.content) > 256  # above gzip_min_length / brotli_min_length


def test_brotli_modules_loaded(host):
    with host.sudo():
        workers = host.check_output("pgrep -u www-data -f 'nginx: worker'").split()
        maps = host.file(f"/proc/{workers[0]}/maps").content_string
    assert "ngx_http_brotli_filter_module.so" in maps
    assert "ngx_http_brotli_static_module.so" in maps


def test_security_headers_and_no_version(api, security_headers):
    response = api.get("/api/items")
    for name, value in security_headers.items():
        assert response.headers.get(name) == value, name
    assert response.headers["server"] == "nginx"


@pytest.mark.parametrize("path", ["/.env", "/.git/config", "/static/.htpasswd"])
def test_dotfiles_forbidden(api, path):
    assert api.get(path).status_code == 403


def test_client_address_reaches_the_app(host, api, controller):
    marker = uuid.uuid4().hex[:10]
    assert api.get(f"/api/items?limit=1&trace={marker}").status_code == 200
    # The app's server span records the client as the app saw it: the controller's address
    # from nginx's X-Forwarded-For, not the socket's empty peer or 127.0.0.1.

    def marked_server_spans(spans: list[dict]) -> list[dict]:
        return [
            span
            for span in spans
            if span["kind"] in (2, "SPAN_KIND_SERVER")
            and any(marker in str(value) for value in span["attributes"].values())
        ]

    spans = wait_for_spans(
        host,
        marker,
        lambda spans: bool(marked_server_spans(spans)),
        "the server span of the marked request",
    )
    server = marked_server_spans(spans)[0]
    client = {server["attributes"].get(k) for k in ("client.address", "net.peer.ip")}
    assert controller in client, server["attributes"]


def test_every_request_is_logged_once(host, api, controller):
    # nginx's access log has it, with the client's address; the app's (app_access_log) not.
    marker = uuid.uuid4().hex[:10]
    assert api.get(f"/api/items?limit=1&logged={marker}").status_code == 200
    time.sleep(1)
    with host.sudo():
        journal = host.check_output(
            "journalctl -u nginx.service -u 'webstack-*.service' --since=-2min -o cat"
            f" --grep={marker}"
        )
    lines = [line for line in journal.splitlines() if marker in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{controller} "), lines


def curl_statuses(host, url: str, count: int, parallel: int, *args: str) -> dict[int, int]:
    cmd = [
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\\n", "--parallel",
        "--parallel-max", str(parallel), "--interface", LIMITED_ADDRESS, *args,
        f"{url}?[1-{count}]",
    ]  # fmt: skip
    out = host.check_output(" ".join(shlex.quote(part) for part in cmd))
    counts: dict[int, int] = {}
    for code in out.split():
        counts[int(code)] = counts.get(int(code), 0) + 1
    return counts


def test_beyond_the_burst_is_refused_while_health_answers(host):
    time.sleep(1)  # let earlier requests drain from the limiter
    burst = host.run(
        "curl -s -o /dev/null -w '%{http_code}\\n' --parallel --parallel-max 50 "
        f"--interface {LIMITED_ADDRESS} 'http://127.0.0.1:8080/index.html?[1-3000]' "
        "> /tmp/burst.codes & "
        f"sleep 0.2; curl -s --interface {LIMITED_ADDRESS} -o /dev/null -w '%{{http_code}}' "
        "http://127.0.0.1:8080/health; wait"
    )
    assert burst.stdout.strip() == "200", "health refused during the burst"
    codes = host.file("/tmp/burst.codes").content_string.split()
    assert codes.count("429") > 0, "no request was refused beyond the burst"
    assert codes.count("200") >= 200, "the burst allowance was not served"


def test_health_is_never_limited(host):
    time.sleep(1)
    counts = curl_statuses(host, "http://127.0.0.1:8080/health", 2000, 50)
    assert counts == {200: 2000}, counts


def test_api_connections_per_address_are_capped(host):
    # 150 concurrent connections from one address: beyond 100, limit_conn refuses.
    counts = curl_statuses(host, "http://127.0.0.1:8080/api/items", 600, 150)
    assert set(counts) <= {200, 429}, counts
    assert counts.get(429, 0) > 0, counts


def test_units_survive_a_restart(host, api):
    for unit in UNITS:
        with host.sudo():
            host.check_output(f"systemctl restart {unit}")
        assert host.service(unit).is_running, unit
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if api.get("/api/items").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    assert api.get("/health").json()["status"] == "ok"
    assert api.post("/api/notes", json={"title": "after", "content": "restart"}).status_code == 201


def test_request_through_nginx_is_traced(host, api):
    note = api.post("/api/notes", json={"title": "traced", "content": "via nginx"}).json()
    path = f"/api/notes/{note['id']}"
    assert api.get(path).status_code == 200
    wait_for_spans(
        host,
        path,
        lambda spans: any(path in span["attributes"].values() for span in spans),
        f"a span of GET {path} through nginx",
    )
