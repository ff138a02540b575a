"""The service map and the addresses of a site, checked and filled in once.

``webstack_services`` (inventory) declares the app's services; every other role derives
what it needs from the normalised map this module returns: the app units and their
sockets, nginx's routes, upstreams and hidden paths, PostgreSQL's connection budget, the
scrape targets. ``webstack_private_address`` (host variable, default ``ansible_host``) is
the address each host binds to and is reached at; it comes from the inventory, never
from gathered facts, so it resolves for hosts outside ``--limit``.

Bad input stops the play with a message naming the variable and the entry.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

# URL paths each domain's router answers (app/<domain>/router.py; tests/test_topology.py
# checks this table against the app). A service serving a domain gets these paths routed.
DOMAIN_PATHS: dict[str, str] = {
    "items": "/api/items",
    "notes": "/api/notes",
    "users": "/users",
    "orders": "/orders",
    "payments": "/payments",
}
# The root service (prefix "") also answers these: its docs and the health check.
ROOT_PATHS = ("/docs", "/redoc", "/openapi.json")
# Which domains a domain calls at the services that serve them (app/core/settings.py,
# DOMAIN_REQUIREMENTS): orders checks users and charges at payments; payments checks users
# and reads the order it is paying.
DOMAIN_CALLS: dict[str, tuple[str, ...]] = {
    "orders": ("users", "payments"),
    "payments": ("users", "orders"),
}
# Paths of a domain that only the other services call: never routed to the public.
DOMAIN_INTERNAL_PATHS: dict[str, tuple[str, ...]] = {"payments": ("/payments/internal",)}
# Paths that cost a password hash: proxies limit them harder per client address (POST only
# where the path is also a collection).
DOMAIN_AUTH_PATHS: dict[str, tuple[str, ...]] = {
    "users": ("/users/login", "/users/register", "/users"),
}

# Each service has a PostgreSQL database of its own (the seeds' names): the database of a
# service is its `database` field, else its first domain's here. No two services share one.
DOMAIN_DATABASES: dict[str, str] = {
    "items": "appdb",
    "notes": "appdb",
    "users": "user_db",
    "orders": "order_db",
    "payments": "payment_db",
}
# The tables of each domain's data (app/<domain>/__init__.py, less idempotency_keys, which
# every service has its own of): what playbooks/split-databases.yml moves out of a
# database the services used to share.
DOMAIN_TABLES: dict[str, tuple[str, ...]] = {
    "items": ("items",),
    "notes": ("notes",),
    "users": ("users",),
    "orders": ("orders", "order_items"),
    "payments": ("payments",),
}
# The secrets a domain's code reads (app/core/settings.py, DOMAIN_REQUIREMENTS and the
# cache's users): a service's settings file holds only those of its domains.
DOMAIN_SECRETS: dict[str, tuple[str, ...]] = {
    "items": ("cache",),
    "notes": ("cache",),
    "users": ("cache", "jwt"),
    "orders": ("jwt",),
    "payments": ("jwt",),
}
NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
DATABASE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
FIELDS = {
    "name",
    "domains",
    "database",
    "prefix",
    "port",
    "workers",
    "db_pool_size",
    "db_max_overflow",
    "group",
    "env",
}
VARIABLE = "webstack_services"


def _fail(index: int, name: Any, problem: str) -> AnsibleFilterError:
    label = f"{VARIABLE}[{index}]" + (f" ({name})" if name else "")
    return AnsibleFilterError(f"{label}: {problem}")


def _positive_int(value: Any, index: int, name: str, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(index, name, f"{field} must be an integer >= {minimum}, not {value!r}")
    return value


def webstack_topology(
    services: Any,
    groups: Mapping[str, Iterable[str]],
    defaults: Mapping[str, Any],
    socket_dir: str = "/run/webstack",
) -> list[dict[str, Any]]:
    """``webstack_services`` checked, each entry complete: hosts, paths, sizes.

    ``database`` (its PostgreSQL database, DOMAIN_DATABASES of its first domain unless
    given) and ``db_user`` (its login role: the database's name without its ``db``
    suffix, plus ``user``: appdb -> appuser, user_db -> user_user), ``db_connections``
    (what its workers on every host may hold at once), ``tables`` (its domains' data),
    ``secrets`` (``cache``, ``jwt``:
    which shared secrets its domains read) and ``user`` (its system account,
    ``webstack-<name>``) are added too.

    Added to each entry: ``hosts`` (inventory hosts that run it), ``socket`` (its Unix
    socket), ``upstream`` (nginx's name for it), ``paths`` (URL paths routed to it, with
    everything below them), ``prefix_paths`` (URL prefixes routed to it: the root service's
    docs), ``metrics_path`` (its Prometheus endpoint), ``internal_paths`` (what only other
    services call; neither is ever public), ``auth_paths`` (paths that cost a password
    hash) and ``calls`` (the domains it calls at other services).
    """
    if not isinstance(services, list) or not services:
        raise AnsibleFilterError(f"{VARIABLE} must be a non-empty list of services")
    proxies = list(groups.get("proxy", []))
    seen_names: dict[str, int] = {}
    seen_domains: dict[str, str] = {}
    seen_prefixes: dict[str, str] = {}
    seen_ports: dict[int, str] = {}
    seen_databases: dict[str, str] = {}
    result = []
    for index, entry in enumerate(services):
        if not isinstance(entry, Mapping):
            raise _fail(index, None, "must be a mapping with at least name, domains and port")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise _fail(index, name, "name must be 1-31 characters of a-z, 0-9 and '-'")
        if len(f"webstack-{name}") > 32:
            raise _fail(
                index,
                name,
                "name must be at most 23 characters (its system user is "
                "webstack-<name>, at most 32)",
            )
        if name in seen_names:
            raise _fail(index, name, f"declared twice (also {VARIABLE}[{seen_names[name]}])")
        seen_names[name] = index
        unknown = sorted(set(entry) - FIELDS)
        if unknown:
            raise _fail(index, name, f"unknown fields {unknown}; known: {sorted(FIELDS)}")

        domains = entry.get("domains")
        if not isinstance(domains, list) or not domains:
            raise _fail(index, name, f"domains must be a non-empty list of {list(DOMAIN_PATHS)}")
        for domain in domains:
            if domain not in DOMAIN_PATHS:
                raise _fail(
                    index, name, f"unknown domain {domain!r}; known: {', '.join(DOMAIN_PATHS)}"
                )
            if domain in seen_domains:
                raise _fail(
                    index, name, f"domain {domain!r} is already served by {seen_domains[domain]}"
                )
            seen_domains[domain] = name

        prefix = entry.get("prefix", "")
        # /api/items and /api/notes belong to the root service, whose docs are at /docs.
        allowed = {""} | {DOMAIN_PATHS[d] for d in domains if d not in ("items", "notes")}
        if prefix not in allowed:
            raise _fail(
                index,
                name,
                f"prefix {prefix!r} must be empty (the root service: /docs, /health) or the "
                f"path of one of its domains: {sorted(allowed - {''})}",
            )
        if prefix in seen_prefixes:
            raise _fail(
                index,
                name,
                f"URL prefix {prefix or '(root)'!r} is already taken by {seen_prefixes[prefix]}",
            )
        seen_prefixes[prefix] = name

        port = entry.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            raise _fail(index, name, f"port must be an integer 1024-65535, not {port!r}")
        if port in seen_ports:
            raise _fail(index, name, f"port {port} is already used by {seen_ports[port]}")
        seen_ports[port] = name

        group = entry.get("group", "app")
        hosts = list(groups.get(group, [])) if isinstance(group, str) else []
        if not hosts and proxies:
            raise _fail(
                index,
                name,
                f"runs on the inventory group {group!r}, which has no hosts, while the proxy "
                "group routes to it: add hosts to the group or remove the service",
            )
        database = entry.get("database", DOMAIN_DATABASES[domains[0]])
        if not isinstance(database, str) or not DATABASE.match(database):
            raise _fail(
                index,
                name,
                f"database must be 1-48 characters of a-z, 0-9 and '_', starting with a "
                f"letter, not {database!r}",
            )
        if database in seen_databases:
            raise _fail(
                index,
                name,
                f"database {database!r} is already the database of {seen_databases[database]}: "
                "each service has its own (set `database` to another name)",
            )
        seen_databases[database] = name
        stem = database[:-2] if database.endswith("db") and len(database) > 2 else database + "_"
        db_user = stem + "user"

        env = entry.get("env", {})
        if not isinstance(env, Mapping):
            raise _fail(index, name, "env must be a mapping of variable names to values")

        workers = _positive_int(entry.get("workers", defaults["workers"]), index, name, "workers")
        pool = _positive_int(
            entry.get("db_pool_size", defaults["db_pool_size"]), index, name, "db_pool_size"
        )
        overflow = _positive_int(
            entry.get("db_max_overflow", defaults["db_max_overflow"]),
            index,
            name,
            "db_max_overflow",
            minimum=0,
        )
        result.append(
            {
                "name": name,
                "domains": list(domains),
                "database": database,
                "db_user": db_user,
                "db_connections": len(hosts) * workers * (pool + overflow),
                "secrets": sorted({k for d in domains for k in DOMAIN_SECRETS[d]}),
                "tables": [t for d in domains for t in DOMAIN_TABLES[d]],
                "user": f"webstack-{name}",
                "prefix": prefix,
                "port": port,
                "workers": workers,
                "db_pool_size": pool,
                "db_max_overflow": overflow,
                "group": group,
                "hosts": hosts,
                "env": dict(env),
                "socket": f"{socket_dir.rstrip('/')}/{name}.sock",
                "upstream": "webstack_" + name.replace("-", "_"),
                "paths": [DOMAIN_PATHS[d] for d in domains],
                "prefix_paths": list(ROOT_PATHS) if prefix == "" else [],
                "metrics_path": f"{prefix}/metrics",
                "internal_paths": [p for d in domains for p in DOMAIN_INTERNAL_PATHS.get(d, ())],
                "auth_paths": [p for d in domains for p in DOMAIN_AUTH_PATHS.get(d, ())],
                "calls": sorted({c for d in domains for c in DOMAIN_CALLS.get(d, ())}),
            }
        )

    for service in result:
        for domain in service["domains"]:
            for needed in DOMAIN_CALLS.get(domain, ()):
                if needed not in seen_domains:
                    raise _fail(
                        seen_names[service["name"]],
                        service["name"],
                        f"serves {domain}, which needs a service serving {needed}",
                    )
    return result


def webstack_addresses(hostvars: Mapping[str, Any], hosts: Iterable[str]) -> dict[str, str]:
    """Each host's private address: ``webstack_private_address``, else ``ansible_host``."""
    addresses = {}
    for host in hosts:
        values = hostvars[host]
        value = values.get("webstack_private_address")
        source = "webstack_private_address"
        if value in (None, ""):
            value = values.get("ansible_host")
            source = "ansible_host (webstack_private_address is not set)"
        if value in (None, ""):
            raise AnsibleFilterError(
                f"host {host}: set webstack_private_address (or ansible_host) to the address "
                "it is reached at on the private network"
            )
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            raise AnsibleFilterError(
                f"host {host}: {source} is {value!r}, not an IP address; set "
                "webstack_private_address to the host's address on the private network"
            ) from None
        addresses[host] = str(address)
    return addresses


def webstack_db_connections(services: Iterable[Mapping[str, Any]], planned_hosts: int = 1) -> int:
    """Connections every app worker of every service may hold at once, on every host that
    runs it or on ``planned_hosts`` hosts if that is more."""
    if isinstance(planned_hosts, str) and planned_hosts.strip().isdigit():  # -e name=3
        planned_hosts = int(planned_hosts)
    if isinstance(planned_hosts, bool) or not isinstance(planned_hosts, int) or planned_hosts < 1:
        raise AnsibleFilterError(
            f"webstack_db_planned_hosts is {planned_hosts!r}; it must be a whole number, 1 or more"
        )
    return sum(
        max(len(s["hosts"]), planned_hosts)
        * s["workers"]
        * (s["db_pool_size"] + s["db_max_overflow"])
        for s in services
    )


PASSWORDS = "webstack_db_passwords"


def webstack_db_password(passwords: Any, service: Mapping[str, Any]) -> str:
    """The password of ``service``'s database role: ``webstack_db_passwords[<name>]``.

    A missing or empty one stops the play naming the variable (never showing a value).
    """
    name = service["name"]
    if not isinstance(passwords, Mapping):
        raise AnsibleFilterError(
            f"{PASSWORDS} must be a mapping of each service's name to the password of its "
            f"database role (from the vault), e.g. {PASSWORDS}: {{{name}: ...}}"
        )
    value = passwords.get(name)
    if value is None or not isinstance(value, str) or value == "":
        raise AnsibleFilterError(
            f"{PASSWORDS}.{name} is not set: the password of {service['db_user']}, the "
            f"database role of the {name} service (from the vault)"
        )
    return value


def webstack_hostport(address: str, port: int) -> str:
    """``address:port`` as sockets, URLs and nginx write it (IPv6 in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def webstack_db_passwords_checked(passwords: Any, services: Iterable[Mapping[str, Any]]) -> bool:
    """True when every service has its password (else the error names the variable)."""
    for service in services:
        webstack_db_password(passwords, service)
    return True


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "webstack_topology": webstack_topology,
            "webstack_addresses": webstack_addresses,
            "webstack_db_connections": webstack_db_connections,
            "webstack_db_password": webstack_db_password,
            "webstack_db_passwords_checked": webstack_db_passwords_checked,
            "webstack_hostport": webstack_hostport,
        }
