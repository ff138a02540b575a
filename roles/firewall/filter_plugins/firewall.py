"""Which hosts may reach which port of this host, derived from the inventory groups.

Nothing here lists an address or a port: the addresses are the hosts' private addresses
(``webstack_topology.address``), the ports those the other roles listen on, each declared
once (``roles/webstack`` and ``roles/database`` defaults), and who talks to whom follows
from the groups, as the roles that connect derive it:

- proxies: nginx's listeners from anywhere;
- app hosts: each service's port from the proxies (upstreams), the services that call it
  from other hosts (``calls``) and Prometheus;
- db hosts: PostgreSQL from the app hosts (directly, or their HAProxy with Patroni) and
  the other members (replication, ``pg_rewind``); Patroni's REST API from the app hosts
  (HAProxy's checks) and the members; pgBackRest's TLS server from the repository host;
- etcd hosts: the client port from the db hosts and the members, the peer port from the
  members; the repository host: pgBackRest's TLS server from the db hosts;
- cache hosts: Valkey from the app hosts; telemetry hosts: OTLP from the app hosts,
  Prometheus (the dashboards) from the proxies;
- each exporter's metrics port from the telemetry (Prometheus) hosts only;
- SSH from ``firewall_admin_networks``; the operator's ``firewall_extra_rules``.

A host never needs a rule for itself (loopback is always accepted), so its own address is
left out of every source list, and a rule left with no source is dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

PROTOCOLS = ("tcp", "udp")
EXTRA_FIELDS = {"name", "ports", "proto", "from_groups", "from_networks"}


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        # Templated defaults ("{{ webstack_valkey_port }}") arrive as strings of digits.
        if isinstance(value, str) and value.isdigit() and 1 <= int(value) <= 65535:
            return int(value)
        raise AnsibleFilterError(f"{where}: port must be an integer 1-65535, not {value!r}")
    return value


def _networks(values: Any, where: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise AnsibleFilterError(f"{where}: must be a list of addresses or networks (CIDR)")
    result = []
    for value in values:
        try:
            result.append(str(ipaddress.ip_network(str(value), strict=False)))
        except ValueError:
            raise AnsibleFilterError(
                f"{where}: {value!r} is not an IPv4/IPv6 address or network (CIDR)"
            ) from None
    return result


def _members(groups: Mapping[str, Any], *names: str) -> list[str]:
    hosts: list[str] = []
    for name in names:
        hosts += [h for h in groups.get(name) or [] if h not in hosts]
    return hosts


def firewall_rules(
    host: str,
    groups: Mapping[str, Any],
    topology: Mapping[str, Any],
    database: Mapping[str, Any],
    ports: Mapping[str, Any],
    admin_networks: Any,
    extra_rules: Any = (),
) -> list[dict[str, Any]]:
    """This host's allowances: each {name, proto, ports, sources} where sources is a list of
    networks (a host's address as /32 or /128), or None for anyone."""
    address = topology["address"]
    port = {key: _port(value, f"port {key}") for key, value in ports.items() if key != "nginx"}
    rules: list[dict[str, Any]] = []

    def allow(name: str, numbers: Iterable[int], hosts: Iterable[str] | None, proto="tcp"):
        if hosts is None:
            sources = None
        else:
            sources = sorted(
                {str(ipaddress.ip_network(address[h])) for h in hosts if h != host},
                key=lambda n: (ipaddress.ip_network(n).version, ipaddress.ip_network(n)),
            )
            if not sources:
                return
        rules.append(
            {"name": name, "proto": proto, "ports": sorted(set(numbers)), "sources": sources}
        )

    def member(group: str) -> bool:
        return host in (groups.get(group) or [])

    app = _members(groups, "app")
    proxy = _members(groups, "proxy")
    telemetry = _members(groups, "telemetry")

    networks = _networks(admin_networks, "firewall_admin_networks")
    if not networks:
        raise AnsibleFilterError(
            "firewall_admin_networks is empty: list the networks SSH is allowed from "
            "(at least the address Ansible connects from), or set firewall_enabled: false"
        )
    rules.append({"name": "ssh", "proto": "tcp", "ports": [port["ssh"]], "sources": networks})

    if member("proxy"):
        listen = ports["nginx"]
        if not isinstance(listen, list) or not listen:
            raise AnsibleFilterError("webstack_nginx_listen: must be a non-empty list of listeners")
        numbers = [
            _port(
                entry.get("port") if isinstance(entry, Mapping) else entry,
                "webstack_nginx_listen",
            )
            for entry in listen
        ]
        allow("nginx", numbers, None)
        allow("nginx-exporter", [port["nginx_exporter"]], telemetry)
        allow("mtail", [port["mtail"]], telemetry)

    for service in topology["services"]:
        if host not in service["hosts"]:
            continue
        callers = [
            h
            for other in topology["services"]
            if set(other.get("calls", [])) & set(service["domains"])
            for h in other["hosts"]
            if h not in service["hosts"]
        ]
        allow(f"service {service['name']}", [service["port"]], proxy + callers + telemetry)

    members = list(database.get("members") or [])
    dcs = list(database.get("dcs") or [])
    repository = database.get("repository")
    if host in members:
        allow("postgresql", [port["postgresql"]], app + members)
        if database.get("ha"):
            allow("patroni", [port["patroni"]], app + members)
        if repository and not database.get("local_repository"):
            allow("pgbackrest", [port["pgbackrest"]], [repository])
        allow("postgres-exporter", [port["postgres_exporter"]], telemetry)
    if host in dcs:
        allow("etcd", [port["etcd"]], members + dcs)
        allow("etcd-peer", [port["etcd_peer"]], dcs)
    if repository and host == repository and host not in members:
        allow("pgbackrest", [port["pgbackrest"]], members)

    if member("cache"):
        allow("valkey", [port["valkey"]], app)
        allow("redis-exporter", [port["redis_exporter"]], telemetry)
    if member("telemetry"):
        allow("otlp", [port["otlp_grpc"], port["otlp_http"]], app)
        allow("prometheus", [port["prometheus"]], proxy)

    allow("node-exporter", [port["node_exporter"]], telemetry)

    if isinstance(extra_rules, str) or not isinstance(extra_rules, Iterable):
        raise AnsibleFilterError("firewall_extra_rules: must be a list of rules")
    for index, extra in enumerate(extra_rules):
        where = f"firewall_extra_rules[{index}]"
        if not isinstance(extra, Mapping):
            raise AnsibleFilterError(f"{where}: must be a mapping")
        unknown = sorted(set(extra) - EXTRA_FIELDS)
        if unknown:
            raise AnsibleFilterError(f"{where}: unknown fields {unknown}")
        name = extra.get("name")
        if not isinstance(name, str) or not name or '"' in name:
            raise AnsibleFilterError(f"{where}: needs a name (text without quotes)")
        numbers = extra.get("ports")
        if not isinstance(numbers, list) or not numbers:
            raise AnsibleFilterError(f"{where} ({name}): ports must be a non-empty list")
        numbers = [_port(n, f"{where} ({name})") for n in numbers]
        proto = extra.get("proto", "tcp")
        if proto not in PROTOCOLS:
            raise AnsibleFilterError(f"{where} ({name}): proto must be one of {PROTOCOLS}")
        from_groups = extra.get("from_groups", [])
        from_networks = extra.get("from_networks", [])
        if not isinstance(from_groups, list):
            raise AnsibleFilterError(f"{where} ({name}): from_groups must be a list of groups")
        unknown_groups = [g for g in from_groups if g not in groups]
        if unknown_groups:
            raise AnsibleFilterError(
                f"{where} ({name}): from_groups names no inventory group: {unknown_groups}"
            )
        if not from_groups and not from_networks:
            raise AnsibleFilterError(
                f"{where} ({name}): say who may connect (from_groups and/or from_networks; "
                '"0.0.0.0/0" and "::/0" for anyone)'
            )
        sources = set(_networks(from_networks, f"{where} ({name}).from_networks"))
        sources |= {str(ipaddress.ip_network(address[h])) for h in _members(groups, *from_groups)}
        sources.discard(str(ipaddress.ip_network(address[host])))
        if sources:
            rules.append(
                {
                    "name": name,
                    "proto": proto,
                    "ports": sorted(set(numbers)),
                    "sources": sorted(
                        sources,
                        key=lambda n: (ipaddress.ip_network(n).version, ipaddress.ip_network(n)),
                    ),
                }
            )
    return rules


def firewall_family(sources: Iterable[str], version: int) -> list[str]:
    """The networks of one IP version (4 or 6), for `ip saddr` / `ip6 saddr`."""
    return [s for s in sources if ipaddress.ip_network(s).version == version]


def firewall_admits(address: str, networks: Iterable[str]) -> bool:
    """Whether an address lies in one of the networks (the controller in the admin range)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(str(n), strict=False) for n in networks)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "firewall_rules": firewall_rules,
            "firewall_family": firewall_family,
            "firewall_admits": firewall_admits,
        }
