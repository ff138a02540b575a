"""How a value is written into the app's settings files.

The files are read by the app itself with python-dotenv (``app/core/settings.py``, without
expansion) and by systemd's ``EnvironmentFile=``. Both take a double-quoted value
literally once ``\\`` and ``"`` are escaped with a backslash, so every value a password or
secret can hold is written as it is (``'``, ``$``, ``#``, spaces), except a line break or
a NUL, which no environment variable can carry through both: those stop the play, naming
the variable and never the value.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError


def app_env_value(value: Any, name: str = "the value") -> str:
    """``value`` double-quoted for a settings file; fails on a line break or NUL."""
    text = str(value)
    if any(character in text for character in "\n\r\0"):
        raise AnsibleFilterError(
            f"{name} contains a line break or a NUL character, which a settings file cannot hold"
        )
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"app_env_value": app_env_value}
