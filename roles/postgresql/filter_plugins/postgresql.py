"""postgresql.conf values written safely, and settings checked before anything changes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

# A parameter name as postgresql.conf's lexer reads it: an identifier, or a qualified
# `extension.name` for an extension's own settings.
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


def postgresql_conf_value(value: Any) -> str:
    """A value as postgresql.conf spells it: numbers bare, booleans on/off, text quoted."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace("'", "''").replace("\n", "\\n")
    return f"'{text}'"


def postgresql_checked_settings(settings: Any, variable: str) -> dict[str, Any]:
    """``settings`` unchanged, or an error naming ``variable`` and the bad entry.

    Names and value types are checked here, at the start of the play; whether PostgreSQL
    accepts each value is its own business (the role asks it before a file is replaced).
    """
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError(f"{variable} must be a mapping of setting names to values")
    for name, value in settings.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise AnsibleFilterError(
                f"{variable}: {name!r} is not a PostgreSQL setting name "
                "(letters, digits and '_', or extension.name)"
            )
        if value is None or isinstance(value, Mapping | list):
            raise AnsibleFilterError(
                f"{variable}.{name}: the value must be a string, number or boolean, not {value!r}"
            )
    return dict(settings)


def postgresql_stranded(
    services: Iterable[Mapping[str, Any]],
    shared: str,
    existing: Iterable[str],
    migrated: Iterable[str],
    filled: Mapping[str, Iterable[str]],
    copied: Mapping[str, Iterable[str]],
) -> list[dict[str, Any]]:
    """The services whose rows would be left behind in ``shared`` by starting them now.

    A service with a database of its own whose tables hold rows in ``shared`` (a site
    deployed before each service had its own database: ``filled`` maps a service's name to
    those of its tables with rows there), while its own database does not exist or its
    migrations never ran there (not in ``migrated``: no ``alembic_version``) and holds no
    copy of them (``copied``: its tables with rows in its own database), would start on
    an empty database: playbooks/split-databases.yml moves the rows first. Once its own
    database was migrated, that database is the service's, whatever ``shared`` still holds.
    """
    if shared not in set(existing):
        return []
    done = set(migrated)
    stranded = []
    for service in services:
        if service["database"] == shared or service["database"] in done:
            continue
        tables = sorted(set(filled.get(service["name"], ())))
        if tables and not list(copied.get(service["name"], ())):
            stranded.append(
                {"name": service["name"], "database": service["database"], "tables": tables}
            )
    return stranded


def postgresql_tables_by_service(results: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """A looped query's results (loop_var ``service``, rows with ``tablename``): each
    service's name to the tables its query returned; skipped iterations left out."""
    return {
        result["service"]["name"]: [row["tablename"] for row in result["query_result"]]
        for result in results
        if "query_result" in result
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "postgresql_conf_value": postgresql_conf_value,
            "postgresql_checked_settings": postgresql_checked_settings,
            "postgresql_stranded": postgresql_stranded,
            "postgresql_tables_by_service": postgresql_tables_by_service,
        }
