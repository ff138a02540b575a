"""Metrics, dashboards and alerts: every target up, every dashboard panel with data after
traffic, the overview drawn in a real browser, an alert delivered when a service stops, and
bad input refused before Prometheus changes.

Written for any inventory of the webstack: the checks run on the first host of the
`telemetry` group (Prometheus), reach the dashboards through the first proxy's nginx from
the controller, and derive every expected target from the inventory and the service map.
"""

from __future__ import annotations

import base64
import html.parser
import json
import os
import re
import shlex
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest
import testinfra

testinfra_hosts = ["ansible://telemetry"]

USER = "monitor"
PAGES = ("index.html", "overview.html")
# Where the verify step's webhook receiver listens (inventories/sandbox/group_vars).
WEBHOOK_PORT = 9095
# This file also runs in the cluster scenario; checks that come out the same on any
# topology run in the single-host one only.
SINGLE_HOST_SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "default") == "default"
ARTIFACTS = Path(
    os.environ.get(
        "WEBSTACK_ARTIFACTS_DIR",
        Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / ".artifacts",
    )
)


# --- The site, from the inventory --------------------------------------------------------


@pytest.fixture(scope="module")
def site(host) -> dict[str, Any]:
    variables = host.ansible.get_variables()
    # testinfra lists a host once per group it is in under "all".
    groups = {name: list(dict.fromkeys(members)) for name, members in variables["groups"].items()}
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    hosts = {
        name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")
        for name in groups["all"]
    }
    proxy = groups["proxy"][0]
    return {
        "groups": groups,
        "hosts": hosts,
        "vars": variables,
        "services": variables["webstack_services"],
        "base": f"http://{hosts[proxy].ansible.get_variables()['ansible_host']}:8080",
    }


@pytest.fixture(scope="module")
def password(secret) -> str:
    return secret("prometheus_web_password")


def fetch(url: str, auth: tuple[str, str] | None, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data)  # noqa: S310 - http:// of the test host
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@pytest.fixture(scope="module")
def prometheus(site, password):
    """GET an API path of Prometheus through nginx's dashboards path, as the operator."""

    def get(path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = fetch(f"{site['base']}/monitoring/api/v1/{path}{query}", (USER, password))
        assert status == 200, body
        return json.loads(body)["data"]

    return get


def record(name: str, value: Any) -> None:
    """Keep a measurement beside the screenshot (.artifacts/monitoring.json)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "monitoring.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    values[name] = value
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def expected_targets(site) -> set[tuple[str, str, str]]:
    """(job, instance, service) of every target the inventory and service map call for."""
    groups, me = site["groups"], site["groups"]["telemetry"][0]
    targets = {("node", h, "") for h in groups["all"]}
    targets |= {("postgresql", h, "") for h in groups.get("db", [])}
    targets |= {("valkey", h, "") for h in groups.get("cache", [])}
    targets |= {("nginx", h, "") for h in groups.get("proxy", [])}
    targets |= {("mtail", h, "") for h in groups.get("proxy", [])}
    # Hosts a scenario's side effect put into app with add_host, which the inventory file
    # does not show (molecule/cluster/molecule.yml names them).
    added = [h for h in os.environ.get("WEBSTACK_ADDED_APP_HOSTS", "").split(",") if h]
    for service in site["services"]:
        group = service.get("group", "app")
        for h in groups.get(group, []) + (added if group == "app" else []):
            targets.add(("webstack", h, service["name"]))
    targets |= {(job, me, "") for job in ("otelcol", "alertmanager", "prometheus")}
    return targets


def test_every_target_of_the_site_is_scraped_and_up(site, prometheus):
    expected = expected_targets(site)
    deadline = time.monotonic() + 60
    while True:
        active = prometheus("targets", state="active")["activeTargets"]
        found = {
            (t["labels"]["job"], t["labels"]["instance"], t["labels"].get("service", "")): t
            for t in active
        }
        down = {key: t["lastError"] for key, t in found.items() if t["health"] != "up"}
        if set(found) == expected and not down:
            break
        assert time.monotonic() < deadline, {
            "missing": sorted(expected - set(found)),
            "unexpected": sorted(set(found) - expected),
            "down": down,
        }
        time.sleep(2)
    record("targets_up", sorted("/".join(filter(None, key)) for key in found))


def test_dashboards_and_api_need_the_password(site, password):
    base = site["base"]
    for path in ("/monitoring/consoles/overview.html", "/monitoring/api/v1/query?query=up"):
        assert fetch(base + path, None)[0] == 401, path
        assert fetch(base + path, (USER, password + "x"))[0] == 401, path
        assert fetch(base + path, ("admin", password))[0] == 401, path
        assert fetch(base + path, (USER, password))[0] == 200, path
    status, _ = fetch(base + "/monitoring/", None)
    assert status == 302
    # The services' /metrics stay internal.
    assert fetch(base + "/metrics", None)[0] == 404


def test_prometheus_is_not_reachable_around_nginx(site, host):
    """On a site of one host Prometheus and the exporters listen on loopback only."""
    if len(site["groups"]["all"]) > 1:
        pytest.skip("several hosts: the private network reaches them (firewall it)")
    address = host.ansible.get_variables()["ansible_host"]
    listening = host.check_output("ss -Hltn")
    for port in (9090, 9093, 9100, 9113, 9121, 9187, 3903, 8081):
        assert f"{address}:{port}" not in listening and f"*:{port}" not in listening, port


def test_secrets_are_not_world_readable(host):
    with host.sudo():
        for path, mode in (
            ("/etc/prometheus/web-users.htpasswd", 0o600),
            ("/etc/prometheus/self-scrape.password", 0o640),
            ("/etc/prometheus/web.yml", 0o640),
        ):
            assert host.file(path).mode == mode, path
        assert "$2y$" in host.file("/etc/prometheus/web.yml").content_string
    ps = host.check_output("ps -eo args")
    assert "password" not in ps.lower()


# --- Traffic, panels, the overview in a browser ------------------------------------------


class Traffic:
    """Requests through nginx, as users make them: the catalog, docs, accounts, orders."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.count = 0

    def call(self, method: str, path: str, body: Any = None, token: str = "") -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        self.count += 1
        try:
            with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            error.read()
            return None
        return json.loads(text) if text.startswith(("{", "[")) else text

    def round(self, index: int) -> None:
        item = self.call("POST", "/api/items", {"name": f"monitored {index}"})
        for _ in range(3):
            self.call("GET", f"/api/items/{item['id']}")  # a miss, then hits
        self.call("GET", "/api/items?limit=5")
        self.call("GET", "/api/notes")
        self.call("GET", "/api/items/0")  # 404 (422)
        self.call("GET", "/no/such/page")  # nginx 404
        self.call("GET", "/docs")
        name = f"mon{index}x{int(time.time() * 1000) % 10**9}"
        password = "Monitored-2024"
        self.call(
            "POST",
            "/users/register",
            {"email": f"{name}@example.com", "username": name, "password": password},
        )
        login = self.call("POST", "/users/login", {"username": name, "password": password})
        token = login["access_token"]
        self.call("GET", "/users/me", token=token)
        for _ in range(2):
            self.call(
                "POST",
                "/orders",
                {"items": [{"name": "widget", "quantity": 2, "price": "9.99"}]},
                token=token,
            )
        self.call("GET", "/orders", token=token)
        self.call("GET", "/payments", token=token)


@pytest.fixture(scope="module")
def traffic(site) -> Traffic:
    load = Traffic(site["base"])
    for index in range(3):
        load.round(index)
    # rate() needs two samples of each new series: three scrape intervals.
    interval = parse_duration(site["vars"].get("prometheus_scrape_interval", "15s"))
    time.sleep(3 * interval + 1)
    return load


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    assert match, text
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]


class PanelParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.panels: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "ws-graph" in values.get("class", "").split():
            self.panels.append(values)


def pages(site) -> list[str]:
    return [*PAGES, *(f"service.html?service={s['name']}" for s in site["services"])]


def panels_of(site, password, page: str) -> list[dict[str, str]]:
    status, body = fetch(f"{site['base']}/monitoring/consoles/{page}", (USER, password))
    assert status == 200, body
    parser = PanelParser()
    parser.feed(body)
    return parser.panels


def test_every_dashboard_panel_has_data_after_traffic(site, password, prometheus, traffic):
    checked, empty = 0, []
    for page in pages(site):
        panels = panels_of(site, password, page)
        if page != "index.html":
            assert panels, f"{page} has no graphs"
        for panel in panels:
            result = prometheus("query", query=panel["data-expr"])["result"]
            checked += 1
            if not result:
                empty.append(f"{page}: {panel['data-title']}: {panel['data-expr']}")
    record("panels_with_data", checked)
    assert not empty, "\n".join(empty)
    # A page per service, with the business panels where they belong.
    titles = {p["data-title"] for p in panels_of(site, password, "service.html?service=orders")}
    assert "Orders placed by outcome" in titles
    titles = {p["data-title"] for p in panels_of(site, password, "service.html?service=payments")}
    assert "Payments by outcome" in titles


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows (RGB or RGBA bytes) of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, header = 8, b"", None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    channels = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r[i : i + 3]) for r in rows for i in range(0, stride, channels)]


# The browser draws the same pages whatever the topology (the test above checks every
# panel's query on each): a CPU-heavy half minute, spent in the single-host scenario only.
@pytest.mark.skipif(
    not SINGLE_HOST_SCENARIO,
    reason="the pages draw the same on any topology; the default scenario checks it",
)
def test_overview_under_load_draws_its_graphs_in_a_browser(site, password, traffic):
    """Headless Chromium on the controller opens the overview through nginx while load
    runs; the screenshot (kept as an artifact) must show the graphs' lines. The last 15
    minutes: a host converged minutes ago has no more, and its lines should fill the width."""
    chromium = next(
        (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None
    )
    assert chromium, "chromium is not installed on the controller (scripts/bootstrap.sh)"
    stop = threading.Event()

    def load() -> None:
        index = 100
        while not stop.is_set():
            traffic.round(index)
            index += 1

    def reads() -> None:
        while not stop.is_set():
            traffic.call("GET", "/api/items?limit=5")
            traffic.call("GET", "/users/openapi.json")

    runners = [threading.Thread(target=load, daemon=True)]
    runners += [threading.Thread(target=reads, daemon=True) for _ in range(3)]
    for runner in runners:
        runner.start()
    try:
        time.sleep(10)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "monitoring-overview.png"
        shot.unlink(missing_ok=True)
        url = site["base"].replace("://", f"://{USER}:{password}@", 1)
        with tempfile.TemporaryDirectory() as profile:
            run = subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    f"--user-data-dir={profile}",
                    "--hide-scrollbars",
                    "--window-size=1400,2300",
                    "--virtual-time-budget=20000",
                    f"--screenshot={shot}",
                    f"{url}/monitoring/consoles/overview.html?range=15m",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
    finally:
        stop.set()
        for runner in runners:
            runner.join(timeout=60)
    assert shot.exists(), run.stderr[-2000:]
    width, height, pixels = png_pixels(shot)
    # The graphs' lines are drawn in the palette of roles/prometheus/files/console_libraries.
    palette = {bytes.fromhex(c) for c in ("3366cc", "dc3912", "ff9900", "109618", "990099")}
    lines = sum(1 for p in pixels if p in palette)
    colors = len(set(pixels))
    record(
        "screenshot",
        {"path": str(shot), "size": [width, height], "colours": colors, "line_pixels": lines},
    )
    assert colors > 50, "the page is blank"
    # A blank page has none; a fresh host's fifteen minutes drew about 2,700 (1400x2300).
    assert lines > 1000, "no graph lines drawn"


# --- An alert, from a stopped service to the operator's webhook --------------------------

RECEIVER = r"""
import http.server, json, sys, time
out = sys.argv[1]
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(out, "a") as f:
            f.write(json.dumps({"received": time.time(), "body": body}) + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Receiver).serve_forever()
"""


def test_a_stopped_service_fires_its_alert_at_the_webhook(site, host):
    variables = site["vars"]
    assert f"127.0.0.1:{WEBHOOK_PORT}" in " ".join(variables["alertmanager_webhook_urls"])
    service = next(s for s in site["services"] if s["name"] == "payments")
    victim_name = site["groups"][service.get("group", "app")][0]
    victim = site["hosts"][victim_name]
    units = "webstack-payments.socket webstack-payments.service"
    log = "/run/webstack-test-webhook.jsonl"
    with host.sudo():
        host.run(f"systemctl stop webstack-test-webhook; rm -f {log}")
        host.check_output(
            "systemd-run --unit=webstack-test-webhook --collect --quiet "
            f"python3 -c {shlex.quote(RECEIVER)} {log} {WEBHOOK_PORT}"
        )
    budget = (
        parse_duration(variables["prometheus_alert_target_down_for"])
        + parse_duration(variables["prometheus_evaluation_interval"])
        + parse_duration(variables["prometheus_scrape_interval"])
        + parse_duration(variables["alertmanager_group_wait"])
        + 2
    )
    try:
        with victim.sudo():
            victim.check_output(f"systemctl stop {units}")
        stopped = time.time()
        alert = None
        while alert is None and time.time() < stopped + budget + 30:
            time.sleep(1)
            with host.sudo():
                lines = host.run(f"cat {log} 2>/dev/null").stdout.splitlines()
            for line in lines:
                entry = json.loads(line)
                for candidate in entry["body"]["alerts"]:
                    labels = candidate["labels"]
                    if (
                        candidate["status"] == "firing"
                        and labels.get("alertname") == "TargetDown"
                        and labels.get("service") == "payments"
                        and labels.get("instance") == victim_name
                    ):
                        alert = (entry["received"], candidate)
        assert alert, "TargetDown for payments never reached the webhook"
        took = alert[0] - stopped
        record("alert_delivered_after_seconds", {"took": round(took, 1), "budget": budget})
        assert took <= budget, f"took {took:.1f} s, more than the rule's for + intervals"
        assert "does not answer its scrapes" in alert[1]["annotations"]["summary"]
    finally:
        with victim.sudo():
            victim.run(f"systemctl start {units}")
            victim.run(
                "for i in $(seq 30); do curl -sf --unix-socket /run/webstack/payments.sock "
                "http://localhost/payments/health >/dev/null && break; sleep 1; done"
            )
        with host.sudo():
            host.run("systemctl stop webstack-test-webhook")
        # nginx gives a failed upstream member its next chance after fail_timeout (5 s).
        time.sleep(6)


# --- Bad input: refused before Prometheus changes ----------------------------------------

# The role refuses bad input on the Prometheus host before anything changes, whatever the
# topology: the single-host scenario proves it, and the cluster (where this file also runs)
# spends its time on what only several hosts show.
input_checks = pytest.mark.skipif(
    not SINGLE_HOST_SCENARIO,
    reason="bad input is refused the same on any topology; the default scenario checks it",
)


def run_playbook(*extra: str) -> subprocess.CompletedProcess[str]:
    project = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
    return subprocess.run(
        [
            "ansible-playbook",
            f"--inventory={os.environ['MOLECULE_INVENTORY_FILE']}",
            "--tags=prometheus",
            *extra,
            str(project / "playbooks/monitoring.yml"),
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(project / "roles")},
        check=False,
    )


def loaded(prometheus) -> tuple[Any, Any]:
    reload = prometheus("query", query="prometheus_config_last_reload_success_timestamp_seconds")
    rules = sorted(g["name"] for g in prometheus("rules")["groups"])
    return reload["result"][0]["value"][1], rules


@input_checks
def test_a_broken_rule_fails_the_play_and_prometheus_keeps_its_rules(host, prometheus):
    before = loaded(prometheus)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as bad:
        bad.write(
            "groups:\n  - name: operator\n    rules:\n      - alert: Broken\n"
            "        expr: sum(rate(http_requests_total[5m]) >\n"
        )
    try:
        run = run_playbook(f'--extra-vars={{"prometheus_extra_rule_files": ["{bad.name}"]}}')
    finally:
        os.unlink(bad.name)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "Install the operator's rule files" in output
    assert re.search(r"5:\d+: .*parse error", output), output[-3000:]
    with host.sudo():
        assert not host.file("/etc/prometheus/rules/extra-" + Path(bad.name).stem + ".yml").exists
    assert loaded(prometheus) == before


@input_checks
def test_a_missing_dashboard_password_stops_the_play_at_its_start(host, prometheus):
    before = loaded(prometheus)
    run = run_playbook('--extra-vars={"prometheus_web_password": ""}')
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "prometheus_web_password" in output
    assert "Check settings argument_specs cannot express" in output
    assert loaded(prometheus) == before
