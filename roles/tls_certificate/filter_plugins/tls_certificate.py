"""Certificate names: checked once, turned into subjectAltName entries.

``tls_certificate_names`` lists the DNS names and IP addresses a certificate is for. An
explicit list is checked strictly (a bad entry stops the play, naming it); the default list,
built from what the host is called and reached at, silently drops what is not a usable name
(an inventory alias with an underscore, say), since the operator never wrote it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from ansible.errors import AnsibleFilterError

VARIABLE = "tls_certificate_names"
# RFC 1123 labels: letters, digits and inner hyphens, 1-63 characters each.
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _problem(name: Any, source: str) -> str | None:
    """Why ``name`` cannot go into a certificate from ``source``, or None when it can."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        if source == "acme":
            return "is an IP address; ACME (http-01) certifies DNS names only"
        return None
    lowered = name.lower().rstrip(".")
    if len(lowered) > 253:
        return "is longer than 253 characters"
    labels = lowered.split(".")
    wildcard = labels[0] == "*"
    if wildcard:
        if source == "acme":
            return "is a wildcard; http-01 cannot prove control of a wildcard name"
        if len(labels) < 3:
            return "is a wildcard directly under a top-level domain"
        labels = labels[1:]
    for label in labels:
        if not LABEL.match(label):
            return (
                f"is not a DNS name or an IP address (label {label!r}: letters, digits and "
                "inner hyphens only, 1-63 characters)"
            )
    if source == "acme" and (len(labels) < 2 or lowered == "localhost"):
        return "is not a public DNS name; an ACME CA only certifies names in public DNS"
    return None


def tls_certificate_checked_names(names: Any, source: str = "selfsigned") -> list[str]:
    """``names`` as given, each checked; the first failure stops the play, naming it."""
    if not isinstance(names, list) or not names:
        raise AnsibleFilterError(f"{VARIABLE} must be a non-empty list of DNS names and IPs")
    seen: dict[str, int] = {}
    result = []
    for index, name in enumerate(names):
        problem = _problem(name, source)
        if problem:
            raise AnsibleFilterError(f"{VARIABLE}[{index}] ({name!r}) {problem}")
        key = name.lower().rstrip(".")
        if key in seen:
            raise AnsibleFilterError(
                f"{VARIABLE}[{index}] ({name!r}) repeats {VARIABLE}[{seen[key]}]"
            )
        seen[key] = index
        result.append(key)
    return result


def tls_certificate_usable_names(
    candidates: Iterable[Any], source: str = "selfsigned"
) -> list[str]:
    """The candidates that are usable names, in order, each once (for derived defaults)."""
    result: list[str] = []
    for name in candidates:
        if isinstance(name, str) and name and _problem(name, source) is None:
            key = name.lower().rstrip(".")
            if key not in result:
                result.append(key)
    return result


def tls_certificate_sans(names: Iterable[str]) -> list[str]:
    """subjectAltName entries (``DNS:...``, ``IP:...``) for checked names."""
    entries = []
    for name in names:
        try:
            entries.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return entries


def tls_certificate_covers(sans: Iterable[str], name: str) -> bool:
    """Whether a certificate with subjectAltName entries ``sans`` is valid for ``name``."""
    name = name.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    for entry in sans:
        kind, _, value = entry.partition(":")
        if address is not None:
            if kind.upper() in ("IP", "IP ADDRESS"):
                try:
                    if ipaddress.ip_address(value.strip()) == address:
                        return True
                except ValueError:
                    continue
            continue
        if kind.upper() != "DNS":
            continue
        value = value.strip().lower().rstrip(".")
        if value == name:
            return True
        # A wildcard covers exactly one leftmost label.
        if value.startswith("*.") and "." in name and name.split(".", 1)[1] == value[2:]:
            return True
    return False


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "tls_certificate_checked_names": tls_certificate_checked_names,
            "tls_certificate_usable_names": tls_certificate_usable_names,
            "tls_certificate_sans": tls_certificate_sans,
            "tls_certificate_covers": tls_certificate_covers,
        }
