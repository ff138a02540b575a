"""The Patroni cluster under write load: a killed postmaster, a lost host, a switchover
and settings changes (side_effect.yml), every acknowledged write found afterwards."""

from __future__ import annotations

import json

import pytest
from conftest import cluster, load_json, primary_of

# Writes must succeed again within this many seconds of a failure (issue 12).
MAX_GAP = 30.0


@pytest.fixture(scope="module")
def writes(recorded) -> dict:
    return load_json(recorded / "write-load.json")


@pytest.fixture(scope="module")
def drills(recorded) -> dict:
    return load_json(recorded / "drills.json")


@pytest.fixture(scope="module")
def settings_runs(recorded) -> dict:
    return load_json(recorded / "settings.json")


def window(writes: dict, start: float, end: float) -> dict:
    """What the writer saw from `start` to `end`: the longest time without an acknowledged
    write that overlaps the window, and the writes acknowledged and failed in it."""
    times = [t for t, _ in writes["acknowledged"]]
    gap, last = 0.0, None
    for t in times:
        if last is not None and t >= start and last <= end:
            gap = max(gap, t - last)
        last = t
    failed: dict[str, int] = {}
    for t, status in writes["failures"]:
        if start <= t <= end:
            failed[status] = failed.get(status, 0) + 1
    return {
        "gap_s": round(gap, 2),
        "acknowledged": sum(1 for t in times if start <= t <= end),
        "failed": failed,
    }


def report(name: str, figures: dict) -> None:
    print(f"\n{name}: {json.dumps(figures)}")


def test_every_acknowledged_write_is_in_the_database(writes, hosts, groups):
    primary = primary_of(cluster(hosts[groups["db"][0]]))
    run = writes["acknowledged"][0][1].rsplit("-", 2)[0]
    sql = f"SELECT name FROM items WHERE name LIKE '{run}-%'"
    with hosts[primary].sudo("postgres"):
        rows = hosts[primary].check_output(f'psql -d appdb -XAtc "{sql}"')
    found = set(rows.split())
    acknowledged = {name for _, name in writes["acknowledged"]}
    missing = acknowledged - found
    failed = sum(writes["by_status"].get(s, 0) for s in writes["by_status"] if s[0] != "2")
    report(
        "writes",
        {
            "sent": writes["sent"],
            "acknowledged": len(acknowledged),
            "failed": failed,
            "found": len(found),
            "missing": len(missing),
            "found_without_answer": len(found - acknowledged),
            "by_status": writes["by_status"],
        },
    )
    assert len(acknowledged) > 1000, writes["by_status"]
    assert not missing, sorted(missing)[:20]


def test_a_killed_postmaster_comes_back_within_30_s(writes, drills):
    times = drills["times"]
    figures = window(writes, times["kill"], times["kill_recovered"])
    figures["recovered_after_s"] = round(times["kill_recovered"] - times["kill"], 1)
    report("SIGKILL of the primary's postmaster", figures)
    assert figures["gap_s"] < MAX_GAP


def test_a_lost_primary_host_is_replaced_within_30_s(writes, drills):
    times = drills["times"]
    figures = window(writes, times["poweroff"], times["failover"] + 5)
    figures["new_primary_after_s"] = round(times["failover"] - times["poweroff"], 1)
    report(f"power-off of {drills['lost_host']}", figures)
    assert figures["gap_s"] < MAX_GAP
    assert figures["acknowledged"] > 0


def test_the_lost_host_rejoins_as_a_replica_by_itself(drills):
    times = drills["times"]
    log = drills["rejoin_log"]
    report(
        "rejoin",
        {"after_boot_s": round(times["rejoined"] - times["boot"], 1), "log": log[:12]},
    )
    assert times["rejoined"] > times["boot"]
    assert any("rewind" in line.lower() or "basebackup" in line.lower() for line in log) or any(
        "following a different leader" in line or "no action" in line.lower() for line in log
    ), log


def test_a_switchover_loses_nothing(writes, drills):
    times = drills["times"]
    figures = window(writes, times["switchover"], times["switched"])
    figures["took_s"] = round(times["switched"] - times["switchover"], 1)
    report(f"switchover {' -> '.join(drills['switchover'])}", figures)
    assert figures["gap_s"] < MAX_GAP


def test_a_bad_setting_fails_the_play_and_the_cluster_keeps_serving(
    writes, settings_runs, hosts, groups
):
    bad = settings_runs["bad"]
    figures = window(writes, bad["started"], bad["finished"])
    report("work_mem 4XB", figures)
    assert bad["rc"] != 0
    assert 'invalid value for parameter "work_mem": "4XB"' in bad["output"]
    assert "Change postgresql_extra_settings.work_mem" in bad["output"]
    assert figures["failed"] == {}, figures
    assert figures["acknowledged"] > 0
    for name in groups["db"]:
        with hosts[name].sudo("postgres"):
            assert hosts[name].check_output("psql -XAtc 'SHOW work_mem'") != "4XB"


def test_a_restart_only_setting_restarts_the_members_and_says_why(
    writes, settings_runs, hosts, groups
):
    run = settings_runs["restart"]
    figures = window(writes, run["started"], run["finished"])
    report("max_files_per_process 1234 (restart)", figures)
    assert run["rc"] == 0, run["output"][-3000:]
    assert "for max_files_per_process" in run["output"]
    assert figures["gap_s"] < MAX_GAP
    for name in groups["db"]:
        with hosts[name].sudo("postgres"):
            assert hosts[name].check_output("psql -XAtc 'SHOW max_files_per_process'") == "1234"
