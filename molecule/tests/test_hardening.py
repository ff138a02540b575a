"""Every daemon the stack runs on the host is sandboxed: `systemd-analyze security` <= 4.0.

The units are found, not listed: every service running on the host except the operating
system's own (the test bed's image runs these and nothing else), so a daemon a new role
adds is rated too. Each unit's exposure is printed; the highest allowed is the one issue 17
set for PostgreSQL ("OK" in systemd's words).
"""

from __future__ import annotations

import re

from tests.hosts import MAX_EXPOSURE, exposure

# What the host's image runs before any play: systemd's own services, D-Bus, SSH, cron and
# the console, and each logged-in user's manager.
OPERATING_SYSTEM = re.compile(
    r"(systemd-.*|dbus|ssh|cron|console-getty|container-getty@.*|getty@.*|user@\d+)\.service"
)


def running_services(host) -> list[str]:
    listed = host.check_output(
        "systemctl list-units --type=service --state=running --no-legend --plain"
    )
    units = [line.split()[0] for line in listed.splitlines() if line.strip()]
    return [unit for unit in units if not OPERATING_SYSTEM.fullmatch(unit)]


def test_every_daemon_of_the_stack_is_sandboxed(host):
    units = running_services(host)
    # The stack is there (the list is not empty by mistake): its main units are among them.
    assert {"nginx.service", "webstack-app.service", "valkey-server.service"} <= set(units)
    rated = {unit: exposure(host, unit) for unit in units}
    exposed = {unit: level for unit, level in rated.items() if level > MAX_EXPOSURE}
    assert not exposed, f"exposure above {MAX_EXPOSURE}: {exposed}"
