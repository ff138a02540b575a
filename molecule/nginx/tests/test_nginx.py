"""nginx compiled with ngx_brotli: the build, its unit, the seed's proxy settings, logs, limits.

Everything is asked on the host itself, over loopback (the scenario has no app: a small echo
server stands in for it on the app's Unix socket where a check needs an upstream).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
import uuid
from pathlib import Path

import pytest
from conftest import curl_response, sh, write_file

BASE = "http://127.0.0.1:8080"
NGINX = "/usr/local/sbin/nginx"
UNIT = "nginx.service"
STATIC_ROOT = "/usr/share/nginx/html"
APP_SOCKET = "/run/webstack/app.sock"
BROTLI_MODULES = ("ngx_http_brotli_filter_module", "ngx_http_brotli_static_module")
# The scenario exempts this loopback address from the rate limits (molecule.yml).
EXEMPT_ADDRESS = "127.0.0.2"
# Beyond 1000 r/s + a burst of 200: a few thousand requests in well under a second.
BURST_REQUESTS = 3000
BURST_PARALLEL = 50  # below the 100 connections per address, so only limit_req refuses


def response(host, path: str, *curl_args: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and body (as text) of one GET over loopback."""
    return curl_response(host, "-sS", "-D", "-", *curl_args, BASE + path)


def status_counts(host, url: str, *curl_args: str) -> dict[int, int]:
    out = host.check_output(
        sh(
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\\n",
            "--parallel",
            "--parallel-max",
            str(BURST_PARALLEL),
            *curl_args,
            url,
        )
    )
    counts: dict[int, int] = {}
    for code in out.split():
        counts[int(code)] = counts.get(int(code), 0) + 1
    return counts


@pytest.fixture(scope="module")
def static_files(host):
    """Test files in the static root: compressible, too small to compress, precompressed."""
    items = [{"id": i, "name": f"item {i}", "description": "x" * 20} for i in range(60)]
    files = {
        "big.json": json.dumps(items),
        "small.txt": "short\n",
        "precompressed.txt": "plain text, long enough to be compressed on the fly. " * 10,
        # brotli_static sends this file as is, whatever its bytes: a marker proves it was used.
        "precompressed.txt.br": "PRECOMPRESSED-BROTLI-MARKER",
    }
    for name, content in files.items():
        write_file(host, f"{STATIC_ROOT}/verify/{name}", content)
    write_file(host, f"{STATIC_ROOT}/.well-known/verify.txt", "well-known\n")
    return files


def nginx_journal(host, since: str) -> str:
    with host.sudo():
        return host.check_output(
            f"journalctl -u {UNIT} --since {shlex.quote(since)} --no-pager -o cat"
        )


def host_time(host) -> str:
    return host.check_output("date '+%Y-%m-%d %H:%M:%S'")


# --- The build --------------------------------------------------------------------------


def test_built_from_source_with_brotli_modules(host):
    with host.sudo():
        version = host.run(f"{NGINX} -V")
    assert version.rc == 0
    assert "nginx/1.26.3" in version.stderr
    for flag in ("--with-compat", "--with-http_v2_module", "--with-pcre-jit", "-Wno-error"):
        assert flag in version.stderr, flag
    assert "--add-dynamic-module=" in version.stderr
    for module in BROTLI_MODULES:
        assert host.file(f"/opt/nginx/current/modules/{module}.so").is_file


def test_config_loads_the_brotli_modules_and_workers_have_them(host):
    with host.sudo():
        config = host.check_output(f"{NGINX} -T 2>/dev/null")
        worker = host.check_output("pgrep -f 'nginx: worker process' | head -1")
        maps = host.file(f"/proc/{worker}/maps").content_string
    for module in BROTLI_MODULES:
        assert f"load_module modules/{module}.so;" in config
        assert "/opt/nginx/builds/" in maps and f"{module}.so" in maps, module


def test_binary_is_hardened(host):
    binary = "/opt/nginx/current/sbin/nginx"
    assert "DYN (Position-Independent Executable" in host.check_output(f"readelf -h {binary}")
    dynamic = host.check_output(f"readelf -d {binary}")
    assert "BIND_NOW" in dynamic
    assert "GNU_RELRO" in host.check_output(f"readelf -lW {binary}")


def test_build_stamp_names_the_build_in_service(host):
    with host.sudo():
        current = host.check_output("readlink -f /opt/nginx/current")
        stamp = json.loads(host.file(f"{current}/BUILD.json").content_string)
        builds = host.check_output("ls /opt/nginx/builds").split()
    keys = ("nginx_version", "nginx_source_sha256", "nginx_brotli_source_sha256")
    inputs = {k: stamp[k] for k in (*keys, "configure_flags")}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    assert Path(current).name == stamp["build_id"] == digest
    assert host.file(f"{current}/ACTIVATED").exists
    # The side effect left the default build in service and one earlier build kept.
    assert len(builds) <= 2
    assert not host.file("/opt/nginx/work").exists


def test_configuration_passes_nginx_t(host):
    with host.sudo():
        result = host.run(f"{NGINX} -t")
    assert result.rc == 0, result.stderr
    assert "test is successful" in result.stderr


# --- The unit ---------------------------------------------------------------------------


def unit_property(host, name: str) -> str:
    return host.check_output(f"systemctl show {UNIT} --property {name} --value")


def test_unit_enabled_active_and_survives_restart(host):
    service = host.service(UNIT)
    assert service.is_enabled
    assert service.is_running
    before = unit_property(host, "MainPID")
    with host.sudo():
        host.check_output(f"systemctl restart {UNIT}")
    assert host.service(UNIT).is_running
    assert unit_property(host, "MainPID") != before
    status, _, _ = response(host, "/")
    assert status == 200


def test_reload_is_graceful(host):
    master = unit_property(host, "MainPID")
    workers = set(host.check_output(f"pgrep -P {master}").split())
    with host.sudo():
        host.check_output(f"systemctl reload {UNIT}")
    for _ in range(50):
        now = set(host.check_output(f"pgrep -P {master}").split())
        if now and not now & workers:
            break
        time.sleep(0.1)
    assert unit_property(host, "MainPID") == master, "a reload must keep the master"
    assert not now & workers, "a reload replaces the workers"


def test_unit_tests_config_and_stops_gracefully(host):
    assert "-t -q" in unit_property(host, "ExecStartPre")
    reload = unit_property(host, "ExecReload")
    assert "-t -q" in reload
    assert "HUP" in reload
    assert unit_property(host, "KillSignal") == "3"  # SIGQUIT: graceful shutdown


def test_unit_follows_the_master_through_its_pid_file(host):
    # A daemonized master (nginx accepts USR2 only then) whose pid file systemd reads, so
    # after a binary upgrade it tracks the new master.
    assert unit_property(host, "Type") == "forking"
    assert unit_property(host, "PIDFile") == "/run/nginx/nginx.pid"
    assert "daemon off" not in unit_property(host, "ExecStart")
    with host.sudo():
        pid = host.file("/run/nginx/nginx.pid").content_string.strip()
    assert pid == unit_property(host, "MainPID")


def test_unit_is_stamped_with_its_process_settings(host):
    # The role restarts nginx only when this stamp changes (limits, sandbox, ExecStart).
    unit = host.file("/etc/systemd/system/nginx.service").content_string
    stamp = next(line for line in unit.splitlines() if line.startswith("# Process settings: "))
    assert len(stamp.split(": ", 1)[1]) == 64
    # The stamped block is the one that starts with Type= and holds the sandbox.
    block = unit[unit.index("Type=forking") :]
    for setting in ("ExecStart=", "LimitNOFILE=", "ProtectSystem=", "CapabilityBoundingSet="):
        assert setting in block, setting


def test_binary_upgrade_keeps_the_sockets_and_systemd_follows(host):
    """nginx-upgrade on the same build: a new master on the same listening sockets."""
    before = unit_property(host, "MainPID")
    with host.sudo():
        sockets_before = host.check_output("ss -Hltn 'sport = :443 or sport = :8080'")
        result = host.run("/usr/local/sbin/nginx-upgrade")
        sockets_after = host.check_output("ss -Hltn 'sport = :443 or sport = :8080'")
    assert result.rc == 0, result.stderr
    after = unit_property(host, "MainPID")
    assert after != before
    assert host.service(UNIT).is_running
    assert f"{before} -> {after}" in result.stderr
    assert not host.file("/run/nginx/nginx.pid.oldbin").exists
    assert len(sockets_after.splitlines()) == len(sockets_before.splitlines()) == 2
    status, _, _ = response(host, "/")
    assert status == 200


def test_unit_is_sandboxed(host):
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
    }
    for name, value in expected.items():
        assert unit_property(host, name) == value, name
    families = set(unit_property(host, "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    capabilities = set(unit_property(host, "CapabilityBoundingSet").split())
    assert capabilities == {
        "cap_chown",
        "cap_kill",
        "cap_net_bind_service",
        "cap_setgid",
        "cap_setuid",
    }
    # Workers dropped root.
    master = unit_property(host, "MainPID")
    users = set(host.check_output(f"ps -o user= --ppid {master}").split())
    assert users == {"www-data"}


def test_open_file_limit(host):
    assert unit_property(host, "LimitNOFILE") == "65535"
    # A container cannot exceed the hard limit its machine gave it (README, "One limit of
    # it"); systemd grants LimitNOFILE up to there. nginx's workers ask for 65535
    # (worker_rlimit_nofile), keep the unit's limit when that is lower, log one setrlimit
    # alert each, and serve normally.
    ceiling = int(host.file("/proc/1/limits").content_string.split("Max open files")[1].split()[1])
    expected = str(min(65535, ceiling))
    master = unit_property(host, "MainPID")
    with host.sudo():
        for pid in [master, *host.check_output(f"pgrep -P {master}").split()]:
            limits = host.file(f"/proc/{pid}/limits").content_string
            line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
            assert line.split()[3:5] == [expected, expected], pid


def test_no_alerts_beyond_the_known_setrlimit_one(host):
    since = host_time(host)
    time.sleep(1)
    with host.sudo():
        host.check_output(f"systemctl restart {UNIT}")
    time.sleep(0.5)
    for line in nginx_journal(host, since).splitlines():
        if "[alert]" in line or "[emerg]" in line or "[crit]" in line:
            assert "setrlimit(RLIMIT_NOFILE, 65535) failed" in line, line


# --- Serving: compression, headers, dotfiles ---------------------------------------------


def test_brotli_for_clients_that_accept_it(host, static_files):
    status, headers, _ = response(host, "/verify/big.json", "-H", "Accept-Encoding: br")
    assert status == 200
    assert headers.get("content-encoding") == "br"
    assert "accept-encoding" in headers.get("vary", "").lower()


def test_gzip_for_gzip_only_clients(host, static_files):
    status, headers, _ = response(host, "/verify/big.json", "-H", "Accept-Encoding: gzip")
    assert status == 200
    assert headers.get("content-encoding") == "gzip"


def test_brotli_preferred_when_both_accepted(host, static_files):
    _, headers, _ = response(host, "/verify/big.json", "-H", "Accept-Encoding: gzip, br")
    assert headers.get("content-encoding") == "br"


def test_brotli_body_decodes_to_the_file(host, static_files):
    body = host.check_output(
        sh("curl", "-s", "-H", "Accept-Encoding: br", BASE + "/verify/big.json")
        + " | python3 -c 'import sys; sys.stdout.write(str(len(sys.stdin.buffer.read())))'"
    )
    assert 0 < int(body) < len(static_files["big.json"]), "compressed body is smaller"


def test_small_responses_are_not_compressed(host, static_files):
    _, headers, _ = response(host, "/verify/small.txt", "-H", "Accept-Encoding: br, gzip")
    assert "content-encoding" not in headers


def test_precompressed_br_files_are_served_as_they_are(host, static_files):
    _, headers, body = response(host, "/verify/precompressed.txt", "-H", "Accept-Encoding: br")
    assert headers.get("content-encoding") == "br"
    assert body == static_files["precompressed.txt.br"]


def test_security_headers_and_no_version(host, static_files, security_headers):
    for path in ("/", "/verify/big.json", "/does-not-exist"):
        _, headers, _ = response(host, path)
        for name, value in security_headers.items():
            assert headers.get(name) == value, (path, name)
        assert headers.get("server") == "nginx", path


def test_dotfiles_are_forbidden(host, static_files):
    for path in ("/.env", "/.git/config", "/verify/.hidden", "/api/.env"):
        status, headers, _ = response(host, path)
        assert status == 403, path
        assert headers.get("x-frame-options") == "SAMEORIGIN", path


def test_well_known_is_served(host, static_files):
    status, _, body = response(host, "/.well-known/verify.txt")
    assert status == 200
    assert body == "well-known\n"


def test_placeholder_page(host):
    assert host.file(f"{STATIC_ROOT}/index.html").is_file
    status, headers, _ = response(host, "/")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/html")


def test_stub_status_on_loopback(host):
    status, _, body = response(host, "/nginx_status")
    assert status == 200
    assert body.startswith("Active connections:")


# --- Proxying to the app over its Unix socket ---------------------------------------------


def test_app_down_gives_502(host):
    # Runs before the echo app starts (tests run in file order): nothing on the socket.
    if host.socket(f"unix://{APP_SOCKET}").is_listening:
        pytest.skip("something listens on the app socket")
    status, _, _ = response(host, "/api/items")
    assert status == 502


@pytest.mark.parametrize("path", ["/api/items", "/docs", "/redoc", "/openapi.json", "/health"])
def test_app_paths_reach_the_socket_with_proxy_headers(host, echo_app, path):
    status, _, body = response(
        host, path, "-H", "Host: shop.example", "-H", "X-Forwarded-For: 203.0.113.7"
    )
    assert status == 200, body
    seen = json.loads(body)
    assert seen["path"] == path
    headers = seen["headers"]
    assert headers["host"] == "shop.example"
    assert headers["x-real-ip"] == "127.0.0.1"
    # The client's own X-Forwarded-For is replaced, not extended: the app trusts the first
    # entry, so a client must not be able to choose it.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    # HTTP/1.1 with an empty Connection header: nothing asks the app to close.
    assert "connection" not in headers


def test_upstream_connections_are_kept_alive(host, echo_app):
    first = json.loads(response(host, "/api/items")[2])["connections"]
    for _ in range(20):
        last = json.loads(response(host, "/api/items")[2])["connections"]
    # Without keepalive every request would be a new connection to the socket.
    assert last - first < 20


def test_proxy_timeouts(host):
    with host.sudo():
        config = host.check_output(f"{NGINX} -T 2>/dev/null")
    assert "proxy_read_timeout 30s;" in config
    # The upstream member (one file per app host) with its passive health check.
    assert f"server unix:{APP_SOCKET} max_fails=1 fail_timeout=5s;" in config
    assert "keepalive 32;" in config


# --- Logs -------------------------------------------------------------------------------


def test_access_log_reaches_the_journal_in_the_seed_format(host, static_files):
    marker = f"verify-{uuid.uuid4()}"
    since = host_time(host)
    response(host, "/verify/small.txt", "-A", marker, "-H", "X-Forwarded-For: 198.51.100.9")
    for _ in range(30):
        lines = [ln for ln in nginx_journal(host, since).splitlines() if marker in ln]
        if lines:
            break
        time.sleep(0.2)
    assert lines, "access log line not in journalctl -u nginx"
    # <ip> - <user> [<time>] "<request>" <status> <bytes> "<referer>" "<agent>" "<xff>"
    line = lines[0]
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /verify/small.txt HTTP/1.1" 200 ' in line
    assert line.endswith(f'"-" "{marker}" "198.51.100.9"')


def test_health_is_not_logged(host, echo_app):
    marker = f"verify-{uuid.uuid4()}"
    since = host_time(host)
    response(host, "/health", "-A", marker)
    response(host, "/api/items", "-A", marker)  # logged: proves the journal was read late enough
    for _ in range(30):
        journal = nginx_journal(host, since)
        if "/api/items" in journal:
            break
        time.sleep(0.2)
    logged = [ln for ln in journal.splitlines() if marker in ln]
    assert any("/api/items" in ln for ln in logged)
    assert not any("/health" in ln for ln in logged)


# --- Rate limits --------------------------------------------------------------------------


def test_burst_beyond_the_limit_is_refused(host, static_files):
    time.sleep(1)  # let earlier requests drain from the limiter
    counts = status_counts(host, f"{BASE}/verify/small.txt?[1-{BURST_REQUESTS}]")
    assert sum(counts.values()) == BURST_REQUESTS
    assert counts.get(429, 0) > 0, counts
    assert counts.get(200, 0) >= 200, counts  # the burst allowance was served
    assert set(counts) <= {200, 429}, counts


def test_exempt_address_is_not_limited(host, static_files):
    time.sleep(1)
    counts = status_counts(
        host, f"{BASE}/verify/small.txt?[1-{BURST_REQUESTS}]", "--interface", EXEMPT_ADDRESS
    )
    assert counts == {200: BURST_REQUESTS}


def test_health_is_not_rate_limited(host, echo_app):
    time.sleep(1)
    counts = status_counts(host, f"{BASE}/health?[1-{BURST_REQUESTS}]")
    assert 429 not in counts, counts
