"""The app: Gunicorn under systemd on a socket only nginx's group may use, traced, migrated."""

from __future__ import annotations

import json
import shlex
import uuid

from conftest import assert_units_active, read_settings, wait_for_spans

SOCKET = "/run/webstack/app.sock"
UNITS = ("webstack-app.socket", "webstack-app.service")


def over_socket(host, path: str, user: str = "www-data", method: str = "GET", body=None):
    data = f"-H 'content-type: application/json' -d {shlex.quote(json.dumps(body))}" if body else ""
    cmd = (
        f"curl -sS --max-time 10 --unix-socket {SOCKET} -X {method} {data} "
        f"-w '\\n%{{http_code}}' http://localhost{path}"
    )
    with host.sudo(user):
        result = host.run(cmd)
    *lines, status = result.stdout.rstrip("\n").split("\n")
    return result.rc, int(status or 0), "\n".join(lines)


def test_units_enabled_and_active(host):
    assert_units_active(host, *UNITS)


def test_health_through_the_socket(host):
    rc, status, body = over_socket(host, "/health")
    assert (rc, status) == (0, 200)
    assert json.loads(body)["status"] == "ok"


def test_socket_refuses_unrelated_users(host):
    sock = host.file(SOCKET)
    assert (sock.user, sock.group, sock.mode) == ("webstack-app", "www-data", 0o660)
    rc, status, _ = over_socket(host, "/health", user="nobody")
    assert rc != 0 and status == 0, "an unrelated user reached the app"


def test_create_and_read_an_item(host):
    name = f"verify-{uuid.uuid4().hex[:8]}"
    rc, status, body = over_socket(host, "/api/items", method="POST", body={"name": name})
    assert (rc, status) == (0, 201), body
    item = json.loads(body)
    rc, status, body = over_socket(host, f"/api/items/{item['id']}")
    assert status == 200
    assert json.loads(body)["name"] == name


def test_settings_file_is_private(host, secret, db_password):
    with host.sudo():
        env = host.file("/etc/webstack/service-app.env")
        assert (env.user, env.group, env.mode) == ("root", "webstack-app", 0o640)
    assert read_settings(host, "/etc/webstack/service-app.env")["APP_DB_PASS"] == db_password("app")
    with host.sudo():
        processes = host.check_output("ps -eo args")
    assert db_password("app") not in processes
    assert secret("valkey_password") not in processes


def test_code_is_not_writable_by_the_app(host):
    with host.sudo("webstack-app"):
        assert host.run("test -w /opt/webstack/current/app/main.py").rc != 0
        assert host.run("test -w /opt/webstack/current/venv/bin/gunicorn").rc != 0
        assert host.run("test -w /opt/webstack/releases").rc != 0


def test_the_release_in_service_is_recorded_and_reported(host):
    with host.sudo():
        current = host.file("/opt/webstack/current")
        assert current.is_symlink
        release = host.file("/opt/webstack/current/RELEASE").content_string.strip()
    # <version>+g<12 hex digits of the commit>, maybe .dirty.<hash> on a test host.
    assert release.split("+g")[0] and len(release.split("+g")[1][:12]) == 12, release
    assert current.linked_to.endswith(f"/releases/{release}")
    _, status, body = over_socket(host, "/health")
    assert status == 200
    assert json.loads(body)["release"] == release


def test_migrations_ran_once_and_workers_do_not_create_schema(host, db_password):
    with host.sudo():
        env = host.file("/etc/webstack/app.env").content_string
    assert "APP_DB_CREATE_SCHEMA=false" in env
    query = shlex.quote("SELECT version_num FROM alembic_version")
    password = shlex.quote(db_password("app"))
    version = host.check_output(
        f"PGPASSWORD={password} psql -h 127.0.0.1 -U appuser -d appdb -XAtc {query}"
    )
    assert version.strip() != ""


def test_workers_match_the_setting(host):
    pid = host.check_output("systemctl show webstack-app.service --property MainPID --value")
    children = host.check_output(f"pgrep -P {pid} -c")
    assert int(children) == 2


def test_survives_restart(host):
    with host.sudo():
        host.check_output("systemctl restart webstack-app.service")
    _, status, _ = over_socket(host, "/health")
    assert status == 200


SERVER = 2  # OTLP's SPAN_KIND_SERVER


def traced_children(host, route: str, path: str) -> tuple[dict, dict[str, set[str]]]:
    """Request `path`; its server span, from the collector's file sink, and the parents of
    the db/cache spans in its trace, by the database system they talk to."""
    _, status, _ = over_socket(host, path)
    assert status == 200

    def servers(spans):
        return [
            span
            for span in spans
            if (span["name"], span.get("kind")) == (route, SERVER)
            and path in span["attributes"].values()
        ]

    (server,) = servers(wait_for_spans(host, path, servers, f"the server span of {path}"))

    def children(spans) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for span in spans:
            if span["traceId"] == server["traceId"] and "db.system" in span["attributes"]:
                found.setdefault(span["attributes"]["db.system"], set()).add(span["parentSpanId"])
        return found

    spans = wait_for_spans(
        host,
        server["traceId"],
        lambda spans: children(spans).keys() == {"postgresql", "redis"},
        f"the db/cache spans of {route}",
    )
    return server, children(spans)


def test_request_spans_reach_the_collector(host):
    # A cache miss on GET /api/notes/{id} reads PostgreSQL and fills Valkey: one HTTP server
    # span with SQL and cache spans as its children, in the same trace.
    route = "GET /api/notes/{note_id}"
    _, status, body = over_socket(
        host, "/api/notes", method="POST", body={"title": "trace", "content": "me"}
    )
    assert status == 201
    server, children = traced_children(host, route, f"/api/notes/{json.loads(body)['id']}")
    assert set(children) == {"postgresql", "redis"}, f"db/cache spans of {route}: {children}"
    assert children["postgresql"] == {server["spanId"]}
    assert children["redis"] == {server["spanId"]}
