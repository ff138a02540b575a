"""What to send Patroni's REST API so its dynamic configuration holds what the role wants."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Keys whose whole content the role owns: anything there it does not list is removed.
OWNED = (("postgresql", "parameters"),)


def patroni_config_patch(
    current: Mapping[str, Any] | None, desired: Mapping[str, Any], path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A JSON merge patch (PATCH /config) from ``current`` to ``desired``; {} when equal.

    Values compare as text (the DCS keeps what it was sent; 128MB and "128MB" are the
    same setting). Under an owned key, what ``desired`` lacks becomes null (removed).
    """
    current = current or {}
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if isinstance(value, Mapping):
            below = patroni_config_patch(current.get(key), value, (*path, key))
            if below:
                patch[key] = below
        elif key not in current or str(current[key]) != str(value):
            patch[key] = value
    if path in OWNED:
        patch.update({key: None for key in current if key not in desired})
    return patch


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"patroni_config_patch": patroni_config_patch}
