"""Valkey: authenticated, persistent, dangerous commands gone, password kept out of sight."""

from __future__ import annotations

import shlex

UNIT = "valkey-server.service"


def cli(host, *args: str, password: str | None = None):
    auth = f"REDISCLI_AUTH={shlex.quote(password)} " if password else ""
    return host.run(auth + "valkey-cli --no-auth-warning " + " ".join(map(shlex.quote, args)))


def test_unit_enabled_and_active(host):
    service = host.service(UNIT)
    assert service.is_enabled
    assert service.is_running


def test_unauthenticated_commands_refused(host):
    result = cli(host, "GET", "anything")
    assert "NOAUTH" in result.stdout + result.stderr


def test_authenticated_ping(host, secret):
    assert cli(host, "PING", password=secret("valkey_password")).stdout.strip() == "PONG"


def test_wrong_password_refused(host):
    result = cli(host, "PING", password="not-the-password")
    assert "PONG" not in result.stdout


def test_dangerous_commands_are_gone(host, secret):
    for command in ("FLUSHALL", "FLUSHDB", "DEBUG"):
        result = cli(host, command, password=secret("valkey_password"))
        assert "unknown command" in result.stdout + result.stderr, command


def test_settings_from_the_seed(host, secret):
    password = secret("valkey_password")
    expected = {
        "maxmemory": "268435456",
        "maxmemory-policy": "allkeys-lru",
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": "900 1 300 10 60 10000",
        "maxclients": "10000",
        "slowlog-log-slower-than": "10000",
        "protected-mode": "yes",
    }
    for name, value in expected.items():
        out = cli(host, "CONFIG", "GET", name, password=password).stdout.splitlines()
        assert out == [name, value], name


def test_password_not_in_process_list(host, secret):
    password = secret("valkey_password")
    with host.sudo():
        processes = host.check_output("ps -eo args")
    assert password not in processes


def test_password_not_in_any_world_readable_file(host, secret):
    password = secret("valkey_password")
    with host.sudo():
        # Every world-readable regular file outside virtual filesystems and the package tree.
        found = host.run(
            "find / -xdev \\( -path /usr -o -path /proc -o -path /sys \\) -prune -o "
            "-type f -perm -o=r -size -2M -print0 | xargs -0 grep -lF -- " + shlex.quote(password)
        )
    assert found.stdout.strip() == "", f"password found in {found.stdout}"


def test_password_stored_only_as_a_hash(host, secret):
    with host.sudo():
        acl = host.file("/etc/valkey/users.acl")
        assert (acl.mode, acl.user, acl.group) == (0o640, "root", "valkey")
        assert secret("valkey_password") not in acl.content_string
        assert secret("valkey_password") not in host.file("/etc/valkey/valkey.conf").content_string


def test_data_survives_a_restart(host, secret):
    password = secret("valkey_password")
    assert cli(host, "SET", "verify:restart", "still-here", password=password).stdout == "OK\n"
    with host.sudo():
        host.check_output(f"systemctl restart {UNIT}")
    assert cli(host, "GET", "verify:restart", password=password).stdout == "still-here\n"
    with host.sudo():
        assert host.file("/var/lib/valkey/appendonlydir/appendonly.aof.manifest").exists
