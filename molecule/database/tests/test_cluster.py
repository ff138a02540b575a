"""The cluster as deployed: Patroni with one primary and streaming replicas, etcd with a
majority, HAProxy on the app host sending to the primary, every unit hardened."""

from __future__ import annotations

import shlex

import pytest
from conftest import cluster, primary_of

from tests.hosts import assert_sandboxed


def test_one_primary_and_every_other_member_streams(hosts, groups):
    members = cluster(hosts[groups["db"][0]])
    assert {m["Member"] for m in members} == set(groups["db"])
    primary_of(members)
    for member in members:
        if member["Role"] != "Leader":
            assert member["State"] == "streaming", member


def test_etcd_has_every_member_healthy(hosts, groups):
    host = hosts[groups["etcd"][0]]
    out = host.check_output("etcdctl --endpoints=http://127.0.0.1:2379 endpoint health --cluster")
    assert out.count("is healthy") == len(groups["etcd"]), out


def test_the_debian_unit_never_runs_the_cluster(hosts, groups):
    for name in groups["db"]:
        unit = hosts[name].service("postgresql@18-main.service")
        assert not unit.is_running
        assert "masked" in hosts[name].run("systemctl is-enabled postgresql@18-main").stdout


def test_haproxy_sends_the_app_to_the_primary(hosts, groups):
    primary = primary_of(cluster(hosts[groups["db"][0]]))
    app = hosts[groups["app"][0]]
    # inet_server_addr() is the address the session reached: the primary's.
    sql = "SELECT inet_server_addr(), pg_is_in_recovery()"
    with app.sudo():
        password = app.check_output(
            "grep ^APP_DB_PASS= /etc/webstack/service-app.env | cut -d= -f2- | tr -d '\"'"
        )
    script = (
        "import asyncio, asyncpg, os\n"
        "async def main():\n"
        "    c = await asyncpg.connect(host='127.0.0.1', port=5000, user='appuser',"
        " database='appdb', password=os.environ['APP_DB_PASS'])\n"
        f"    print(*(await c.fetchrow('{sql}')))\n"
        "asyncio.run(main())\n"
    )
    # The password in the environment, not on the command line.
    python = "/opt/webstack/current/venv/bin/python"
    out = app.check_output(f"APP_DB_PASS={shlex.quote(password)} {python} -c {shlex.quote(script)}")
    address, in_recovery = out.split()
    assert in_recovery == "False"
    assert address == hosts[primary].ansible.get_variables()["ansible_host"]


@pytest.mark.parametrize(
    ("group", "unit"),
    [
        ("db", "patroni.service"),
        ("etcd", "etcd.service"),
        ("db", "pgbackrest.service"),
        ("backup", "pgbackrest.service"),
        ("app", "haproxy.service"),
    ],
)
def test_units_are_hardened(hosts, groups, group, unit):
    assert_sandboxed(hosts[groups[group][0]], unit)
