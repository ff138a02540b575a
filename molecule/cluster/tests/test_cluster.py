"""The stack spread over several hosts: balancing, rolling deploys, an outage, scale-out,
--limit and --tags, and who may reach what."""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import APP_HOSTS, SERVICES, address, load_json, recap, service_requests

from tests.hosts import load_tally

# One public path per service, answered by the service itself.
SERVICE_PATHS = {
    "app": "/api/items?limit=1",
    "users": "/users/openapi.json",
    "orders": "/orders/openapi.json",
    "payments": "/payments/openapi.json",
}


@pytest.fixture(scope="module")
def tally(hosts) -> dict:
    return load_tally(hosts["proxy1"])


@pytest.mark.parametrize("service", SERVICES)
def test_the_proxy_balances_every_service_over_every_app_host(hosts, service):
    before = {name: service_requests(hosts[name], service) for name in APP_HOSTS}
    proxy = hosts["proxy1"]
    url = f"http://127.0.0.1:8080{SERVICE_PATHS[service]}"
    statuses = proxy.check_output(
        f"for i in $(seq 60); do curl -s -o /dev/null -w '%{{http_code}}\\n' {shlex.quote(url)};"
        " done | sort | uniq -c"
    )
    assert statuses.split() == ["60", "200"], statuses
    served = {name: service_requests(hosts[name], service) - before[name] for name in APP_HOSTS}
    # Round robin over three hosts: each takes about a third; none is left out.
    assert all(count >= 10 for count in served.values()), served
    assert sum(served.values()) >= 60, served


def test_the_added_host_runs_debian_13(hosts):
    # app3 boots Debian 13 (molecule.yml); the balancing check above shows it serving.
    assert hosts["app3"].system_info.codename == "trixie"
    assert all(hosts[name].system_info.codename == "forky" for name in ("app1", "app2"))


def test_every_upstream_lists_every_app_host(hosts):
    proxy = hosts["proxy1"]
    with proxy.sudo():
        for service in SERVICES:
            for name in APP_HOSTS:
                member = proxy.file(f"/etc/nginx/upstreams/{service}/{name}.conf")
                assert member.exists, f"{name} missing from {service}'s upstream"
                target = f"{address(hosts[name])}:"
                assert target in member.content_string
            leftovers = proxy.run(f"ls /etc/nginx/upstreams/{service}/ | grep -v '.conf$'")
            assert leftovers.stdout == "", "a drained member was never put back"


def test_no_request_failed_during_the_rollout_and_the_outage(tally):
    assert tally["answers_total"] >= 1000, tally
    assert tally["failures"] == 0, json.dumps(tally, indent=2)
    # The writes and the reads of what they wrote both ran.
    assert {"201", "200"} <= set(tally["statuses"]), tally


def test_the_outage_lasted_and_was_carried_by_the_other_host(recorded, tally):
    outage = load_json(recorded / "outage.json")
    print(f"outage: {outage}; traffic: {tally['answers_total']} answers, {tally['statuses']}")
    assert outage["in_flight_at_stop"] >= 0
    assert outage["stopped"] < outage["started"]
    assert tally["started"] < tally["finished"]


def test_app_hosts_restart_one_after_the_other(recorded):
    # The rollout restarted every service (a unit change), app1's then app2's, and then
    # started app3's for the first time; the hosts share one kernel, hence one monotonic
    # clock (recorded right after the rollout).
    app1, app2, app3 = (load_json(recorded / f"started-{name}.json") for name in APP_HOSTS)
    assert len(app1) == len(app2) == len(app3) == len(SERVICES)
    assert max(app1) < min(app2), (app1, app2)
    assert max(app2) < min(app3), (app2, app3)


def test_the_new_release_runs_everywhere(hosts):
    for name in APP_HOSTS:
        with hosts[name].sudo():
            assert (
                hosts[name]
                .file("/opt/webstack/current/app/main.py")
                .contains("cluster-side-effect")
            )


def test_limit_touches_only_the_host_it_names(recorded):
    ran = recap((recorded / "limited.log").read_text())
    assert set(ran) == {"app2"}, ran
    assert ran["app2"]["failed"] == 0
    assert load_json(recorded / "markers-app2.json") == ['APP_LIMIT_MARK="limited"']
    assert load_json(recorded / "markers-app1.json") == []


def test_tags_touch_only_the_component_they_name(recorded):
    ran = recap((recorded / "tagged.log").read_text())
    assert ran["proxy1"]["changed"] >= 1, ran
    assert all(counts["changed"] == 0 for name, counts in ran.items() if name != "proxy1"), ran
    assert "keepalive_requests 999;" in " ".join(load_json(recorded / "markers-proxy1.json"))
    for name in ("app1", "app2"):
        assert not any(
            "APP_TAGS_MARK" in line for line in load_json(recorded / f"markers-{name}.json")
        )


PG_PROBE = r"""
import socket, struct, sys
sock = socket.create_connection((sys.argv[1], 5432), timeout=5)
params = b"user\0appuser\0database\0appdb\0\0"
sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
kind = sock.recv(1)
body = sock.recv(4096)
print(kind.decode(), body.decode(errors="replace"))
"""


def _pg_answer(host, db_address: str) -> str:
    return host.check_output(f"python3 -c {shlex.quote(PG_PROBE)} {db_address}")


def test_postgresql_asks_app_hosts_for_a_password(hosts):
    db = address(hosts["db1"])
    # 'R': an authentication request (SCRAM), the server is willing to talk to this host.
    # Other hosts do not get this far: the firewall drops them (test_firewall.py), and
    # pg_hba.conf would refuse them behind it.
    assert _pg_answer(hosts["app1"], db).startswith("R")


PG_LOGIN = (
    "import asyncio, asyncpg, sys\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(host=sys.argv[1], user=sys.argv[2], database=sys.argv[3],"
    " password=sys.argv[4])\n"
    "    print(await conn.fetchval('select 1'))\n"
    "asyncio.run(main())\n"
)


def _pg_login(host, db: str, user: str, database: str, password: str):
    return host.run(
        f"/opt/webstack/current/venv/bin/python -c {shlex.quote(PG_LOGIN)} {db} {user}"
        f" {database} {shlex.quote(password)}"
    )


def test_the_app_user_logs_in_from_an_app_host(hosts, db_password):
    db = address(hosts["db1"])
    result = _pg_login(hosts["app3"], db, "appuser", "appdb", db_password("app"))
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_a_service_role_reaches_its_own_database_only(hosts, db_password):
    """user_user with its own password: user_db from an app host, never appdb or order_db."""
    db = address(hosts["db1"])
    password = db_password("users")
    assert _pg_login(hosts["app1"], db, "user_user", "user_db", password).rc == 0
    for database in ("appdb", "order_db"):
        result = _pg_login(hosts["app1"], db, "user_user", database, password)
        assert result.rc != 0
        assert "no pg_hba.conf entry" in result.stderr, result.stderr


VALKEY_PING = r"""
import socket, sys
sock = socket.create_connection((sys.argv[1], 6379), timeout=5)
password = sys.argv[2].encode()
sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(password), password))
print(sock.recv(64).decode())
"""


@pytest.mark.parametrize("name", APP_HOSTS)
def test_valkey_and_the_collector_answer_app_hosts(hosts, secret, name):
    cache = address(hosts["cache1"])
    host = hosts[name]
    out = host.check_output(
        f"python3 -c {shlex.quote(VALKEY_PING)} {cache} {shlex.quote(secret('valkey_password'))}"
    )
    assert out.split() == ["+OK", "+PONG"], out
    assert host.run(f"timeout 5 bash -c '</dev/tcp/{cache}/4317'").rc == 0


def test_the_collector_is_healthy(hosts):
    # Its health check listens beside the receivers; the firewall opens it to nobody.
    cache1 = hosts["cache1"]
    url = f"http://{address(cache1)}:13133/"
    assert cache1.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {url}") == "200"


def test_services_listen_on_the_private_address_only(hosts):
    for name in APP_HOSTS:
        host = hosts[name]
        private = address(host)
        for port in (8000, 8001, 8002, 8003):
            assert host.socket(f"tcp://{private}:{port}").is_listening
            assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    db1 = hosts["db1"]
    assert db1.socket(f"tcp://{address(db1)}:5432").is_listening
    cache1 = hosts["cache1"]
    assert cache1.socket(f"tcp://{address(cache1)}:6379").is_listening
    assert cache1.socket(f"tcp://{address(cache1)}:4317").is_listening
    assert not cache1.socket("tcp://0.0.0.0:4317").is_listening
