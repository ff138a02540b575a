"""Prometheus' scrape jobs (roles/prometheus filter plugin), derived from the inventory and
the service map: every part on every host, at the address it listens on."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from tests.role_plugins import SERVICES, load

topology = load("webstack", "topology")
scrape = load("prometheus", "scrape")
PORTS = {"node": 9100, "postgresql": 9187, "valkey": 9121, "nginx": 9113, "mtail": 3903,
         "otelcol": 8888, "alertmanager": 9093}  # fmt: skip
RELAY = "127.0.0.1:8081"


def jobs(groups: dict[str, list[str]], addresses: dict[str, str], me: str) -> dict[str, Any]:
    services = topology.webstack_topology(
        SERVICES, groups, {"workers": 2, "db_pool_size": 5, "db_max_overflow": 5}
    )
    site = {"services": services, "address": addresses}
    found = scrape.prometheus_scrape_jobs(site, groups, me, PORTS, RELAY, 9090)
    return {
        job["job"]: {
            (t["address"], t["labels"]["instance"], t["labels"].get("service", "")): t["labels"]
            for t in job["targets"]
        }
        for job in found
    }


def test_one_host_is_scraped_over_loopback_and_the_services_through_nginx() -> None:
    groups = {g: ["solo"] for g in ("all", "proxy", "app", "db", "cache", "telemetry")}
    found = jobs(groups, {"solo": "10.0.0.5"}, "solo")
    assert set(found["node"]) == {("127.0.0.1:9100", "solo", "")}
    assert set(found["postgresql"]) == {("127.0.0.1:9187", "solo", "")}
    assert set(found["mtail"]) == {("127.0.0.1:3903", "solo", "")}
    web = found["webstack"]
    assert set(web) == {(RELAY, "solo", s["name"]) for s in SERVICES}
    assert web[(RELAY, "solo", "users")]["__metrics_path__"] == "/users/metrics"
    assert web[(RELAY, "solo", "app")]["__metrics_path__"] == "/metrics"
    assert set(found["prometheus"]) == {("127.0.0.1:9090", "solo", "")}


def test_a_site_of_several_hosts_is_scraped_over_the_private_network() -> None:
    groups = {
        "all": ["web1", "app1", "app2", "db1", "mon1"],
        "proxy": ["web1"],
        "app": ["app1", "app2"],
        "db": ["db1"],
        "cache": ["mon1"],
        "telemetry": ["mon1"],
    }
    addresses = {"web1": "10.0.0.10", "app1": "10.0.0.21", "app2": "10.0.0.22",
                 "db1": "10.0.0.31", "mon1": "fd00::41"}  # fmt: skip
    found = jobs(groups, addresses, "mon1")
    assert set(found["node"]) == {
        ("10.0.0.10:9100", "web1", ""),
        ("10.0.0.21:9100", "app1", ""),
        ("10.0.0.22:9100", "app2", ""),
        ("10.0.0.31:9100", "db1", ""),
        ("127.0.0.1:9100", "mon1", ""),  # Prometheus' own host, the only one: loopback
    }
    assert set(found["valkey"]) == {("127.0.0.1:9121", "mon1", "")}
    assert set(found["nginx"]) == {("10.0.0.10:9113", "web1", "")}
    assert len(found["webstack"]) == 8  # four services on two hosts
    assert found["webstack"][("10.0.0.22:8003", "app2", "payments")]["__metrics_path__"] == (
        "/payments/metrics"
    )
    assert set(found["otelcol"]) == {("127.0.0.1:8888", "mon1", "")}


def test_two_prometheus_hosts_scrape_each_other_over_the_network() -> None:
    groups = {
        "all": ["a", "b"],
        "proxy": ["a"],
        "app": ["a"],
        "db": ["a"],
        "cache": ["a"],
        "telemetry": ["a", "b"],
    }
    found = jobs(groups, {"a": "10.0.0.1", "b": "10.0.0.2"}, "a")
    # Another Prometheus host exists, so exporters listen on the private address.
    assert set(found["node"]) == {("10.0.0.1:9100", "a", ""), ("10.0.0.2:9100", "b", "")}


def test_a_one_host_site_needs_nginx_on_it_for_the_services() -> None:
    groups = {"all": ["solo"], "proxy": [], "app": ["solo"], "db": [], "cache": [],
              "telemetry": ["solo"]}  # fmt: skip
    with pytest.raises(AnsibleFilterError, match="not in the proxy group"):
        jobs(groups, {"solo": "10.0.0.5"}, "solo")


def test_prometheus_runs_on_the_telemetry_group_only() -> None:
    groups = {g: ["a"] for g in ("all", "proxy", "app")} | {"telemetry": ["b"]}
    with pytest.raises(AnsibleFilterError, match="telemetry"):
        jobs(groups, {"a": "10.0.0.1", "b": "10.0.0.2"}, "a")
