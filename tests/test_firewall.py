"""The firewall's rules (roles/firewall filter plugin), derived from the inventory groups:
who may reach which port of each host, for the topologies the scenarios run (the Patroni
tier among them, which the cluster scenario does not have)."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from tests.role_plugins import SERVICES, load

topology = load("webstack", "topology")
database = load("database", "database")
firewall = load("firewall", "firewall")
PORTS = {
    "ssh": 22, "nginx": [{"port": 80}, {"port": 443, "tls": True}, {"port": 8080}],
    "nginx_exporter": 9113, "mtail": 3903, "node_exporter": 9100, "postgresql": 5432,
    "patroni": 8008, "pgbackrest": 8432, "etcd": 2379, "etcd_peer": 2380,
    "postgres_exporter": 9187, "valkey": 6379, "redis_exporter": 9121, "otlp_grpc": 4317,
    "otlp_http": 4318, "prometheus": "9090",
}  # fmt: skip
ADMIN = ["10.0.9.0/24"]
SECRETS = dict.fromkeys(
    [
        "postgresql_replication_password",
        "postgresql_rewind_password",
        "patroni_restapi_password",
        "pgbackrest_repo_cipher_pass",
        "pgbackrest_tls_ca_certificate",
        "pgbackrest_tls_ca_private_key",
    ],
    True,
)


def rules(groups: dict[str, list[str]], me: str, services=SERVICES, extra=()) -> dict:
    """{rule name: (ports, sources as host names or networks, or None for anyone)}."""
    hosts = sorted({h for members in groups.values() for h in members})
    addresses = {h: f"10.0.0.{i + 1}" for i, h in enumerate(hosts)}
    by_address = {f"{a}/32": h for h, a in addresses.items()}
    groups = {"all": hosts, **groups}
    topo = {
        "services": topology.webstack_topology(
            services, groups, {"workers": 2, "db_pool_size": 5, "db_max_overflow": 5}, "/run/w"
        ),
        "address": addresses,
    }
    tier = database.database_topology(groups, addresses, True, SECRETS)
    result = firewall.firewall_rules(me, groups, topo, tier, PORTS, ADMIN, list(extra))
    return {
        r["name"]: (
            r["ports"],
            None if r["sources"] is None else sorted(by_address.get(s, s) for s in r["sources"]),
        )
        for r in result
    }


CLUSTER = {
    "proxy": ["proxy1"],
    "app": ["app1", "app2", "app3"],
    "db": ["db1"],
    "cache": ["cache1"],
    "telemetry": ["cache1"],
}
APPS = ["app1", "app2", "app3"]


def test_each_tier_admits_only_the_hosts_that_connect_to_it() -> None:
    assert rules(CLUSTER, "proxy1") == {
        "ssh": ([22], ADMIN),
        "nginx": ([80, 443, 8080], None),
        "nginx-exporter": ([9113], ["cache1"]),
        "mtail": ([3903], ["cache1"]),
        "node-exporter": ([9100], ["cache1"]),
    }
    app1 = rules(CLUSTER, "app1")
    for name, port in [("app", 8000), ("users", 8001), ("orders", 8002), ("payments", 8003)]:
        # Every app host runs every service: calls stay on the host (Unix sockets).
        assert app1[f"service {name}"] == ([port], ["cache1", "proxy1"])
    assert rules(CLUSTER, "db1") == {
        "ssh": ([22], ADMIN),
        "postgresql": ([5432], APPS),
        "postgres-exporter": ([9187], ["cache1"]),
        "node-exporter": ([9100], ["cache1"]),
    }
    cache1 = rules(CLUSTER, "cache1")
    assert cache1["valkey"] == ([6379], APPS)
    assert cache1["otlp"] == ([4317, 4318], APPS)
    assert cache1["prometheus"] == ([9090], ["proxy1"])
    assert "redis-exporter" not in cache1  # Prometheus is on this host: loopback
    assert "node-exporter" not in cache1


def test_one_host_opens_ssh_and_nginx_only() -> None:
    groups = {g: ["sandbox"] for g in ("proxy", "app", "db", "cache", "telemetry")}
    assert rules(groups, "sandbox") == {
        "ssh": ([22], ADMIN),
        "nginx": ([80, 443, 8080], None),
    }


def test_patroni_etcd_and_pgbackrest() -> None:
    groups = {
        "proxy": ["web"],
        "app": ["web"],
        "db": ["pg1", "pg2"],
        "etcd": ["pg1", "pg2", "aux"],
        "backup": ["aux"],
        "cache": ["aux"],
        "telemetry": ["aux"],
    }
    assert rules(groups, "pg1") == {
        "ssh": ([22], ADMIN),
        "postgresql": ([5432], ["pg2", "web"]),
        "patroni": ([8008], ["pg2", "web"]),
        "pgbackrest": ([8432], ["aux"]),
        "postgres-exporter": ([9187], ["aux"]),
        "etcd": ([2379], ["aux", "pg2"]),
        "etcd-peer": ([2380], ["aux", "pg2"]),
        "node-exporter": ([9100], ["aux"]),
    }
    aux = rules(groups, "aux")
    assert aux["etcd"] == ([2379], ["pg1", "pg2"])
    assert aux["etcd-peer"] == ([2380], ["pg1", "pg2"])
    assert aux["pgbackrest"] == ([8432], ["pg1", "pg2"])
    assert aux["valkey"] == ([6379], ["web"])


def test_services_calling_each_other_across_hosts() -> None:
    groups = {
        "proxy": ["proxy1"],
        "app": ["app1"],
        "accounts": ["acc1"],
        "db": ["db1"],
        "cache": ["db1"],
        "telemetry": ["db1"],
    }
    services = [
        SERVICES[0],
        {**SERVICES[1], "group": "accounts"},
        SERVICES[2],
        SERVICES[3],
    ]
    # orders and payments (app1) call users (acc1) over the network; nobody calls app.
    assert rules(groups, "acc1", services)["service users"] == ([8001], ["app1", "db1", "proxy1"])
    assert rules(groups, "app1", services)["service app"] == ([8000], ["db1", "proxy1"])


def test_extra_rules() -> None:
    extra = [{"name": "red", "ports": [1880], "from_groups": ["app"], "from_networks": ["::/0"]}]
    assert rules(CLUSTER, "db1", extra=extra)["red"] == ([1880], sorted([*APPS, "::/0"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"admin": []}, "firewall_admin_networks is empty"),
        ({"admin": ["10.0.0.300/8"]}, "'10.0.0.300/8' is not an IPv4/IPv6"),
        ({"admin": "10.0.0.0/8"}, "must be a list"),
        ({"extra": [{"name": "x", "ports": [0], "from_networks": []}]}, "port must be"),
        ({"extra": [{"name": "x", "ports": [1]}]}, "say who may connect"),
        ({"extra": [{"name": "x", "ports": [1], "from_groups": ["nope"]}]}, "['nope']"),
        ({"extra": [{"name": "x", "ports": [1], "port": 2}]}, "unknown fields ['port']"),
        ({"extra": [{"name": "x", "ports": [1], "proto": "sctp"}]}, "proto must be"),
    ],
)
def test_bad_input_is_named(change: dict[str, Any], message: str) -> None:
    groups = {"all": ["h"], "proxy": ["h"], "app": ["h"], "db": ["h"]}
    topo = {"services": [], "address": {"h": "10.0.0.1"}}
    with pytest.raises(AnsibleFilterError, match=None) as error:
        firewall.firewall_rules(
            "h", groups, topo, {}, PORTS, change.get("admin", ADMIN), change.get("extra", [])
        )
    assert message in str(error.value)


def test_admits() -> None:
    assert firewall.firewall_admits("10.213.0.1", ["10.213.0.1/32"])
    assert not firewall.firewall_admits("10.213.0.2", ["10.213.0.1/32"])
    assert not firewall.firewall_admits("not-an-address", ["0.0.0.0/0"])
