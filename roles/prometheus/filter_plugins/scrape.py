"""Prometheus' scrape jobs, derived from the inventory and the service map, never listed.

``prometheus_scrape_jobs`` returns the jobs of one Prometheus host as
``[{"job": name, "targets": [{"address": "host:port", "labels": {...}}]}]``:

``node``          every host of the inventory (node_exporter)
``postgresql``    every host of ``db`` (postgres_exporter)
``valkey``        every host of ``cache`` (redis_exporter)
``nginx``         every host of ``proxy`` (nginx exporter, reading stub_status)
``mtail``         every host of ``proxy`` (nginx's responses by status)
``webstack``      every app service on every host that runs it, at its ``metrics_path``
``otelcol``, ``alertmanager``, ``prometheus``  this host's own, over loopback

Every target is labelled ``instance=<inventory host>``; the app's also ``service=<name>``.
Exporters listen on loopback when every Prometheus host is their own host, else on their
host's private address (``webstack_topology.address``): that decides where each is
scraped. The app services listen on their private address and port when the site has
several hosts; on a site of one host they have only their Unix sockets, and nginx's
local-only listener relays their ``/metrics`` (``relay``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

# Which inventory group each exporter job covers (None: every host).
EXPORTER_JOBS: tuple[tuple[str, str | None], ...] = (
    ("node", None),
    ("postgresql", "db"),
    ("valkey", "cache"),
    ("nginx", "proxy"),
    ("mtail", "proxy"),
)


def _hostport(address: str, port: int | str) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def prometheus_scrape_jobs(
    topology: Mapping[str, Any],
    groups: Mapping[str, Iterable[str]],
    this_host: str,
    ports: Mapping[str, int],
    relay: str,
    prometheus_port: int,
) -> list[dict[str, Any]]:
    address = topology["address"]
    prometheus_hosts = list(groups.get("telemetry", []))
    if this_host not in prometheus_hosts:
        raise AnsibleFilterError(
            f"prometheus runs on the telemetry group, and {this_host} is not in it"
        )
    # Where an exporter of `host` listens for this Prometheus: loopback only when every
    # Prometheus host is that host (the exporter roles use the same rule).
    alone = [h for h in prometheus_hosts if h != this_host] == []

    def exporter_address(host: str, port: int) -> str:
        return _hostport("127.0.0.1" if host == this_host and alone else address[host], port)

    jobs: list[dict[str, Any]] = []
    for job, group in EXPORTER_JOBS:
        hosts = list(groups.get("all", [])) if group is None else list(groups.get(group, []))
        jobs.append(
            {
                "job": job,
                "targets": [
                    {"address": exporter_address(h, ports[job]), "labels": {"instance": h}}
                    for h in hosts
                ],
            }
        )

    one_host = len(list(groups.get("all", []))) == 1
    app_targets = []
    for service in topology["services"]:
        for host in service["hosts"]:
            if one_host:
                target = relay
            else:
                target = _hostport(address[host], service["port"])
            app_targets.append(
                {
                    "address": target,
                    "labels": {
                        "instance": host,
                        "service": service["name"],
                        "__metrics_path__": service["metrics_path"],
                    },
                }
            )
    if app_targets and one_host and this_host not in groups.get("proxy", []):
        raise AnsibleFilterError(
            f"{this_host} is the only host, and not in the proxy group: on a one-host site "
            "the app services' /metrics are reached through nginx's local-only listener"
        )
    jobs.append({"job": "webstack", "targets": app_targets})

    local = {"instance": this_host}
    jobs.append(
        {
            "job": "otelcol",
            "targets": [{"address": _hostport("127.0.0.1", ports["otelcol"]), "labels": local}],
        }
    )
    jobs.append(
        {
            "job": "alertmanager",
            "targets": [
                {"address": _hostport("127.0.0.1", ports["alertmanager"]), "labels": local}
            ],
        }
    )
    jobs.append(
        {
            "job": "prometheus",
            "targets": [{"address": _hostport("127.0.0.1", prometheus_port), "labels": local}],
        }
    )
    return jobs


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"prometheus_scrape_jobs": prometheus_scrape_jobs}
