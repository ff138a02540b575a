"""Deploys under load (molecule/resources/side_effect.yml): no request may fail.

The side effect re-deploys while traffic runs through nginx: a new release together with a
settings change and a rotated Valkey password (Valkey restarted, the app reloaded), then a
rollback to the release before (workers reloaded). These checks read what it left
behind, so they need `molecule side-effect` (part of `molecule test`) to have run first.
"""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import read_settings

from tests.hosts import load_tally


@pytest.fixture(scope="module")
def tally(host) -> dict:
    return load_tally(host)


def test_traffic_ran_through_the_deploy_and_the_rollback(tally):
    assert tally["answers_total"] >= 500, tally
    assert tally["finished"] - tally["started"] >= 20, tally
    # Every client wrote, read what it wrote, listed and checked health.
    assert {"201", "200"} <= set(tally["statuses"]), tally


def test_no_request_failed_during_the_deploy_and_the_rollback(tally):
    took = tally["finished"] - tally["started"]
    print(
        "\nrelease with new settings and a rotated password, then rollback: "
        f"{tally['answers_total']} answers in {took:.0f} s, {tally['failures']} failed, "
        f"by status {tally['statuses']}, {tally['resent']} resent unanswered"
    )
    assert tally["failures"] == 0, json.dumps(tally, indent=2)


def _release(host, link: str) -> str:
    with host.sudo():
        return host.file(f"/opt/webstack/{link}/RELEASE").content_string.strip()


def test_the_new_release_ran_and_the_rollback_brought_the_one_before_back(host):
    current, previous = _release(host, "current"), _release(host, "previous")
    assert current != previous
    with host.sudo():
        # The side effect's release (now previous) had the changed code; the one back in
        # service has not.
        assert host.file("/opt/webstack/previous/app/main.py").contains(
            'DEPLOY_MARK = "side-effect"'
        )
        assert not host.file("/opt/webstack/current/app/main.py").contains("DEPLOY_MARK")
    for socket in ("app", "users"):
        with host.sudo("www-data"):
            health = host.check_output(
                f"curl -sS --unix-socket /run/webstack/{socket}.sock http://localhost/health"
            )
        assert json.loads(health)["release"] == current


def test_the_settings_of_the_last_deploy_are_live(host):
    pid = host.check_output("systemctl show webstack-app.service --property MainPID --value")
    with host.sudo():
        environ = host.file(f"/proc/{pid}/environ").content_string
    assert "APP_DEPLOY_MARK=side-effect" in environ


def test_rotated_password_works_and_the_old_one_is_refused(host, secret):
    new, old = secret("valkey_password"), secret("valkey_password.previous")
    assert new != old

    def ping(password: str) -> str:
        auth = f"REDISCLI_AUTH={shlex.quote(password)}"
        return host.run(f"{auth} valkey-cli --no-auth-warning PING").stdout.strip()

    assert ping(new) == "PONG"
    assert ping(old) != "PONG"
    assert read_settings(host, "/etc/webstack/service-app.env")["APP_CACHE_PASS"] == new


def test_app_caches_with_the_rotated_password(host, secret):
    # Fail-open would hide a wrong password from clients; the cache itself shows it.
    created = host.check_output(
        "curl -sS -X POST -H 'content-type: application/json' "
        '-d \'{"name": "after-rotation"}\' http://127.0.0.1:8080/api/items'
    )
    item_id = json.loads(created)["id"]
    host.check_output(f"curl -sS -o /dev/null http://127.0.0.1:8080/api/items/{item_id}")
    auth = f"REDISCLI_AUTH={shlex.quote(secret('valkey_password'))}"
    cached = host.check_output(f"{auth} valkey-cli --no-auth-warning EXISTS items:{item_id}")
    assert cached == "1"
