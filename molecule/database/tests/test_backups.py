"""pgBackRest: an encrypted repository on the backup host, WAL archived, scheduled backups
taken from a replica, and a point-in-time restore between two known writes."""

from __future__ import annotations

import json
import re

import pytest
from conftest import load_json

STANZA = "webstack"


@pytest.fixture(scope="module")
def repository(hosts, groups):
    return hosts[groups["backup"][0]]


def info(repository) -> dict:
    with repository.sudo("postgres"):
        return json.loads(
            repository.check_output(f"pgbackrest --stanza={STANZA} --output=json info")
        )[0]


def test_the_repository_is_encrypted_and_holds_a_full_backup(repository):
    stanza = info(repository)
    assert stanza["status"]["code"] == 0, stanza["status"]
    assert stanza["cipher"] == "aes-256-cbc"
    assert any(backup["type"] == "full" for backup in stanza["backup"])
    with repository.sudo():
        config = repository.file("/etc/pgbackrest.conf")
        assert (config.user, config.group, config.mode) == ("root", "postgres", 0o640)


def test_the_timers_are_scheduled(repository):
    for kind in ("full", "diff"):
        timer = repository.service(f"pgbackrest-{kind}.timer")
        assert timer.is_enabled and timer.is_running


def test_a_scheduled_backup_runs_on_a_replica(repository):
    """The timers' unit, started by hand: the files come from the streaming replica."""
    before = len(info(repository)["backup"])
    with repository.sudo():
        started = repository.check_output("date +%s")
        repository.check_output("systemctl start pgbackrest-backup@diff.service")
        log = repository.check_output(
            f"journalctl -u pgbackrest-backup@diff.service --since @{started} -o cat --no-pager"
        )
    print(log[-2000:])
    stanza = info(repository)
    assert len(stanza["backup"]) == before + 1
    assert stanza["backup"][-1]["type"] == "diff"
    # pgBackRest waits for the standby to replay up to the backup's start, then copies.
    assert re.search(r"replay on the standby reached", log), log


def test_the_passphrase_is_in_no_process_list(hosts):
    for name, host in hosts.items():
        with host.sudo():
            assert "cipher-pass" not in host.check_output("ps -eo args"), name


def test_a_point_in_time_restore_has_the_write_before_and_not_the_one_after(recorded):
    drill = load_json(recorded / "pitr.json")
    print(f"\npoint-in-time restore to {drill['pitr']['target']}: rows {drill['rows']}")
    assert drill["runs"]["restored"]["rc"] in (0, "0"), drill["runs"]["restored"]["output"][-3000:]
    assert drill["rows"] == [drill["pitr"]["before"]]


def test_a_target_before_the_oldest_backup_stops_the_play(recorded):
    run = load_json(recorded / "pitr.json")["runs"]["too_early"]
    assert run["rc"] not in (0, "0")
    assert "pgbackrest_restore_target_time (2000-01-01 00:00:00+00) is before the oldest" in (
        " ".join(run["output"].split())
    )
    # Stopped before anything changed: nothing was restored or started.
    assert "Restore the backup and the WAL" not in run["output"]
