"""The firewall of every host (roles/firewall), proven on the wire.

Nothing here lists a port or an address. Each host's allowances are read from its live
ruleset (`nft -j list table inet webstack`: rule name, ports, sources), and each is checked
against the inventory groups (who should reach that tier). Then every host, and the
controller, opens a TCP connection to every port each other host allows or listens on
(`ss`) at its private address, all at once with a 2 s timeout: an allowed path must
connect, any other must be dropped (no answer at all).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import address

TIMEOUT = 2.0
CONTROLLER = "controller"

# Who may reach each kind of rule, as inventory groups: the policy of issue 17 item 6 in
# one table (the rules themselves are derived by roles/firewall/filter_plugins).
EXPECTED_SOURCES = {
    "postgresql": {"app", "db"},
    "valkey": {"app"},
    "otlp": {"app"},
    "prometheus": {"proxy"},
    "node-exporter": {"telemetry"},
    "postgres-exporter": {"telemetry"},
    "redis-exporter": {"telemetry"},
    "nginx-exporter": {"telemetry"},
    "mtail": {"telemetry"},
    # With Patroni (not in this scenario; tests/test_firewall.py derives them).
    "patroni": {"app", "db"},
    "etcd": {"db", "etcd"},
    "etcd-peer": {"etcd"},
    "pgbackrest": {"db", "backup"},
}

PROBE = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def probe(target):
    address, port = target
    try:
        socket.create_connection((address, port), timeout=float(sys.argv[2])).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "dropped"
    except OSError as error:
        return f"error {error.errno}"

targets = json.loads(sys.argv[1])
with ThreadPoolExecutor(max(1, len(targets))) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""


def _values(right: Any) -> list[Any]:
    """A match's right side: one value, a set of them, prefixes and ranges."""
    items = right["set"] if isinstance(right, dict) and "set" in right else [right]
    result = []
    for item in items:
        if isinstance(item, dict) and "prefix" in item:
            result.append(f"{item['prefix']['addr']}/{item['prefix']['len']}")
        elif isinstance(item, dict) and "range" in item:
            low, high = item["range"]
            if isinstance(low, int):
                result.extend(range(low, high + 1))
            else:  # nft merges neighbouring addresses into a range
                first, last = ipaddress.ip_address(low), ipaddress.ip_address(high)
                result.extend(str(n) for n in ipaddress.summarize_address_range(first, last))
        else:
            result.append(item)
    return result


def rules_of(host) -> list[dict[str, Any]]:
    """The accept rules of the host's input chain that name a port: name, ports, sources
    (networks, or None for anyone)."""
    with host.sudo():
        ruleset = json.loads(host.check_output("nft -j list table inet webstack"))
    rules = []
    for entry in ruleset["nftables"]:
        rule = entry.get("rule")
        if not rule or rule["chain"] != "input" or "comment" not in rule:
            continue
        ports, sources = [], None
        for expr in rule["expr"]:
            match = expr.get("match")
            if not match:
                continue
            field = match["left"].get("payload", {})
            if field.get("field") == "dport" and field.get("protocol") == "tcp":
                ports = _values(match["right"])
            elif field.get("field") == "saddr":
                sources = [str(ipaddress.ip_network(v)) for v in _values(match["right"])]
        if ports:
            rules.append({"name": rule["comment"], "ports": ports, "sources": sources})
    return rules


def listening_ports(host) -> set[int]:
    """TCP ports listening on an address other hosts can reach (not loopback)."""
    ports = set()
    for line in host.check_output("ss -Hltn").splitlines():
        local = line.split()[3]
        addr, _, port = local.rpartition(":")
        addr = addr.strip("[]").split("%")[0]
        if addr == "*" or not ipaddress.ip_address(addr).is_loopback:  # "*", 0.0.0.0, ::
            ports.add(int(port))
    return ports


def hosts_in(networks: list[str], address: dict[str, str]) -> set[str]:
    nets = [ipaddress.ip_network(n) for n in networks]
    return {h for h, a in address.items() if any(ipaddress.ip_address(a) in n for n in nets)}


def admits(rules: list[dict[str, Any]], source: str, port: int) -> bool:
    ip = ipaddress.ip_address(source)
    return any(
        port in rule["ports"]
        and (
            rule["sources"] is None
            or any(ip in ipaddress.ip_network(network) for network in rule["sources"])
        )
        for rule in rules
    )


@pytest.fixture(scope="module")
def site(hosts) -> dict[str, Any]:
    variables = hosts["proxy1"].ansible.get_variables()
    groups = {name: list(dict.fromkeys(members)) for name, members in variables["groups"].items()}
    # The side effect adds hosts to `app` with add_host; the inventory file cannot show it.
    for name in filter(None, os.environ.get("WEBSTACK_ADDED_APP_HOSTS", "").split(",")):
        groups["app"] = list(dict.fromkeys([*groups["app"], name]))
    with ThreadPoolExecutor(len(hosts)) as pool:
        rules = dict(zip(hosts, pool.map(rules_of, hosts.values()), strict=True))
        listening = dict(zip(hosts, pool.map(listening_ports, hosts.values()), strict=True))
    return {
        "groups": groups,
        "address": {name: address(host) for name, host in hosts.items()},
        "admin": variables["firewall_admin_networks"],
        "rules": rules,
        "listening": listening,
    }


def test_every_host_drops_what_no_rule_admits(hosts):
    for name, host in hosts.items():
        with host.sudo():
            chain = host.check_output("nft list chain inet webstack input")
        assert "policy drop;" in chain, name
        assert host.service("nftables").is_enabled, name


def test_each_rule_admits_the_groups_that_need_it(site):
    """Sources checked against the inventory: the app hosts reach PostgreSQL, Valkey and
    the collector; Prometheus hosts every metrics port; the proxies the app services and
    the dashboards; SSH only the administrative networks."""
    address, groups = site["address"], site["groups"]
    for name, rules in site["rules"].items():
        seen = {rule["name"] for rule in rules}
        assert "ssh" in seen, name
        for rule in rules:
            if rule["name"] == "ssh":
                expected = sorted(str(ipaddress.ip_network(n)) for n in site["admin"])
                assert sorted(rule["sources"]) == expected, name
                continue
            if rule["name"] == "nginx":
                assert name in groups["proxy"] and rule["sources"] is None
                continue
            if rule["name"].startswith("service "):
                allowed = {"proxy", "telemetry", "app"}
            else:
                allowed = EXPECTED_SOURCES[rule["name"]]
            members = {h for g in allowed for h in groups.get(g, []) if h != name}
            admitted = hosts_in(rule["sources"], address)
            # Hosts of those groups and nothing else (no wider network).
            assert admitted <= members, (name, rule)
            assert len(admitted) == sum(
                ipaddress.ip_network(n).num_addresses for n in rule["sources"]
            ), (name, rule)
            if rule["name"] in ("valkey", "otlp", "postgresql"):
                # Every app host, the one added by the side effect too.
                assert {h for h in groups["app"] if h != name} <= admitted, (name, rule)
    # Each tier has its rules where the inventory puts it.
    for group, rule in [("cache", "valkey"), ("telemetry", "otlp"), ("db", "postgresql")]:
        for name in groups[group]:
            assert rule in {r["name"] for r in site["rules"][name]}, (name, rule)


def test_allowed_paths_connect_and_every_other_is_dropped(hosts, site):
    """Every source (each host and the controller) against every port each other host
    allows or listens on: open where a rule admits the source, dropped elsewhere."""
    address = site["address"]
    targets = sorted(
        (name, port)
        for name in hosts
        for port in site["listening"][name]
        | {p for rule in site["rules"][name] for p in rule["ports"]}
    )
    controller = controller_address(hosts)
    sources = {**address, CONTROLLER: controller}

    def plan(source: str) -> list[tuple[str, int]]:
        return [(dst, port) for dst, port in targets if dst != source]

    def run(source: str) -> list[str]:
        wanted = [[address[dst], port] for dst, port in plan(source)]
        if source == CONTROLLER:
            return probe_locally(wanted)
        out = hosts[source].check_output(
            f"python3 -c {shlex.quote(PROBE)} {shlex.quote(json.dumps(wanted))} {TIMEOUT}"
        )
        return json.loads(out)

    with ThreadPoolExecutor(len(sources)) as pool:
        results = dict(zip(sources, pool.map(run, sources), strict=True))

    wrong, counts = [], {"open": 0, "dropped": 0}
    for source, outcomes in results.items():
        for (dst, port), outcome in zip(plan(source), outcomes, strict=True):
            expected = "open" if admits(site["rules"][dst], sources[source], port) else "dropped"
            counts[expected] += 1
            if outcome != expected:
                wrong.append(f"{source} -> {dst}:{port} {outcome}, expected {expected}")
    print(f"firewall paths: {counts['open']} open, {counts['dropped']} dropped, as derived")
    assert not wrong, "\n".join(wrong)
    assert counts["open"] > 0 and counts["dropped"] > 0


def controller_address(hosts) -> str:
    """The controller's address on the hosts' network (where its connections come from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect((address(hosts["proxy1"]), 9))
        return udp.getsockname()[0]


def probe_locally(targets: list[list[Any]]) -> list[str]:
    out = subprocess.run(
        ["python3", "-c", PROBE, json.dumps(targets), str(TIMEOUT)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)
