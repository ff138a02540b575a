"""nginx's listeners and the gateway's documentation links, checked and derived once.

``webstack_nginx_listen`` lists the sockets nginx serves on (default :80, :443 with TLS, :8080);
the gateway links and the seed's short documentation addresses come from the service map
(``webstack_topology.services``), so a service added there appears on the overview page.
Bad input stops the play with a message naming the variable and the entry.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

VARIABLE = "webstack_nginx_listen"
FIELDS = {"port", "address", "tls"}
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _fail(index: int, problem: str) -> AnsibleFilterError:
    return AnsibleFilterError(f"{VARIABLE}[{index}]: {problem}")


def _address(value: Any, index: int) -> str:
    """The address as nginx's listen takes it ("" = every IPv4 address)."""
    if value in (None, "", "*"):
        return ""
    if not isinstance(value, str):
        raise _fail(index, f"address must be a string, not {value!r}")
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if HOSTNAME.match(value):
            return value
        raise _fail(index, f"address {value!r} is not an IP address or host name") from None
    return f"[{address}]" if address.version == 6 else str(address)


def nginx_listeners(listen: Any) -> list[dict[str, Any]]:
    """Each listener with ``listen`` (the directive's argument), ``port`` and ``tls``."""
    if not isinstance(listen, list) or not listen:
        raise AnsibleFilterError(f"{VARIABLE} must be a non-empty list of {{port, address, tls}}")
    seen: dict[str, int] = {}
    result = []
    for index, entry in enumerate(listen):
        if not isinstance(entry, Mapping):
            raise _fail(index, f"must be a mapping like {{port: 443, tls: true}}, not {entry!r}")
        unknown = sorted(set(entry) - FIELDS)
        if unknown:
            raise _fail(index, f"unknown fields {unknown}; known: {sorted(FIELDS)}")
        port = entry.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise _fail(index, f"port must be an integer 1-65535, not {port!r}")
        tls = entry.get("tls", False)
        if not isinstance(tls, bool):
            raise _fail(index, f"tls must be true or false, not {tls!r}")
        address = _address(entry.get("address"), index)
        argument = f"{address}:{port}" if address else str(port)
        if argument in seen:
            raise _fail(index, f"{argument} is already listed as {VARIABLE}[{seen[argument]}]")
        seen[argument] = index
        result.append({"listen": argument, "port": port, "tls": tls, "address": address})
    return result


def nginx_docs_links(services: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The docs of every service, for the overview page and the short doc addresses.

    A service at ``/users`` has its docs at ``/users/docs``, ``/users/redoc`` and
    ``/users/openapi.json``, and the seed's short address ``/user-docs`` (the prefix in the
    singular) redirects there; the root service's docs are ``/docs``, ``/redoc`` and
    ``/openapi.json`` and need no short address.
    """
    links = []
    for service in services:
        prefix = service.get("prefix", "")
        alias = None
        if prefix:
            last = prefix.rstrip("/").rsplit("/", 1)[-1]
            alias = f"/{last[:-1] if last.endswith('s') and len(last) > 1 else last}-docs"
        links.append(
            {
                "name": service["name"],
                "domains": list(service.get("domains", [])),
                "paths": list(service.get("paths", [])),
                "docs": f"{prefix}/docs",
                "redoc": f"{prefix}/redoc",
                "openapi": f"{prefix}/openapi.json",
                "alias": alias,
            }
        )
    return links


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"nginx_listeners": nginx_listeners, "nginx_docs_links": nginx_docs_links}
