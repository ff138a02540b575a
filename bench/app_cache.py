"""What the cache buys: cached vs uncached GET /api/items/{id}, and a bare ASGI baseline.

    .venv/bin/python -m bench.app_cache [--rounds 3] [--duration 3] [--connections 32]

Starts a throw-away PostgreSQL and Valkey/Redis (as the tests do), then four Gunicorn
servers with the production settings (``app/gunicorn_conf.py``), each on a Unix socket:

* ``cached``: the app, reading an item that is in the cache;
* ``uncached``: the app with ``APP_CACHE_ENABLED=false``, the same read from PostgreSQL;
* ``health``: the app's ``GET /health``, FastAPI with no I/O at all (the framework's floor);
* ``hello``: ``bench/hello_asgi.py``, a bare ASGI app that answers a constant.

All servers start first (an idle one costs no CPU); then ``--rounds`` rounds measure each
scenario in turn, so a disturbance from another process hits one round, and the median
round is reported. ``tools/loadgen`` (built here with Go; the load generator of every
benchmark) keeps ``--connections`` HTTP/1.1 keep-alive connections busy (one request in
flight on each, as nginx's upstream keepalive would) for ``--warmup`` then ``--duration``
seconds, and counts every failure without retrying. The script prints requests per
second, p50 and p99 latency (each the median round's), the failures, and the ratios the
issue sets as goals (cached >= 3x uncached, cached >= 0.7x hello); it exits 1 on any
failure.

Worker recycling is off during the run. Tracing is off (``OTEL_SDK_DISABLED=true``)
unless ``--tracing`` is given, in which case spans are made but not exported. The load
generator shares the machine's cores with the servers; its own CPU use is printed so the
numbers can be read with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.stack import BenchError, build_loadgen, loadgen_argv
from devservers import GunicornServer, clean_env, running_servers

# What nginx sends the app on its socket (the app trusts the proxy's headers there).
PROXY_HEADERS = (
    "-host",
    "bench",
    "-header",
    "X-Forwarded-For: 127.0.0.1",
    "-header",
    "X-Forwarded-Proto: http",
)


@dataclass
class Round:
    """One measured run of tools/loadgen against one server."""

    rps: float
    p50_ms: float
    p99_ms: float
    failed: int  # answers other than 2xx and transport errors, warm-up included
    reconnects: int  # connections the server closed (Connection: close)
    loadgen_cpu: float  # the load generator's CPU, in cores, over its whole run


@dataclass
class Scenario:
    name: str
    target: str
    path: str
    env: dict[str, str]
    rounds: list[Round] = field(default_factory=list)
    server: GunicornServer | None = None

    def median(self, figure: str) -> float:
        """The median round's figure (robust to a round disturbed by another process)."""
        return statistics.median(getattr(one, figure) for one in self.rounds)


def request(socket_path: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=socket_path)) as client:
        return client.request(method, f"http://bench{path}", **kwargs)  # type: ignore[arg-type]


def start(scenario: Scenario, base_env: dict[str, str], workers: int) -> None:
    scenario.server = GunicornServer({**base_env, **scenario.env}, scenario.target, workers)
    scenario.server.start()
    socket_path = str(scenario.server.socket)
    if scenario.target.startswith("app.") and not request(socket_path, "GET", "/api/items").json():
        body = {"name": "Widget", "description": "A test widget"}
        assert request(socket_path, "POST", "/api/items", json=body).status_code == 201
    check = request(socket_path, "GET", scenario.path)
    assert check.status_code == 200, check.text


def measure(scenario: Scenario, args: argparse.Namespace, loadgen: Path) -> None:
    """One round: tools/loadgen keeps the connections busy for the warm-up and the measured
    time, and counts every failure (it never retries)."""
    assert scenario.server is not None
    argv = loadgen_argv(
        f"unix:{scenario.server.socket}",
        ("-path", scenario.path, *PROXY_HEADERS),
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        binary=str(loadgen),
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"tools/loadgen exited {done.returncode}: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    scenario.rounds.append(
        Round(
            rps=report["rps"],
            p50_ms=report["p50_ms"],
            p99_ms=report["p99_ms"],
            failed=report["errors_total"] + report["non_2xx_total"],
            reconnects=report["reconnects"],
            loadgen_cpu=cpu / seconds,
        )
    )
    if report["reconnects"]:
        print(f"  ! {scenario.name}: the server closed {report['reconnects']} connection(s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds a round")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all scenarios")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="Gunicorn workers")
    parser.add_argument("--tracing", action="store_true", help="make spans (not exported)")
    args = parser.parse_args()
    if not (
        0 < args.duration <= 60
        and 0 <= args.warmup <= 10
        and 1 <= args.rounds <= 10
        and 0 < args.connections <= 512
    ):
        parser.error(
            "bounds: duration (0, 60], warmup [0, 10], rounds [1, 10], connections (0, 512]"
        )

    scenarios = [
        Scenario("cached", "app.main:app", "/api/items/1", {}),
        Scenario("uncached", "app.main:app", "/api/items/1", {"APP_CACHE_ENABLED": "false"}),
        Scenario("health", "app.main:app", "/health", {}),
        Scenario("hello", "bench.hello_asgi:app", "/", {}),
    ]
    print(
        f"{os.cpu_count()} CPUs, {args.workers} Gunicorn workers per server, {args.connections} "
        f"keep-alive connections over a Unix socket, {args.rounds} rounds of "
        f"{args.warmup:g}s warm-up + {args.duration:g}s measured per scenario, "
        f"tracing {'on (not exported)' if args.tracing else 'off'}"
    )
    with running_servers() as (pg, cache):
        database = pg.create_database()
        # Worker recycling (max_requests) is off: at the baseline's rate it would restart
        # workers mid-round and charge their start-up to the baseline alone.
        base_env = clean_env(
            **pg.env(database), **cache.env(), OTEL_TRACES_EXPORTER="none", APP_MAX_REQUESTS="0"
        )
        if args.tracing:
            base_env.pop("OTEL_SDK_DISABLED", None)
        else:
            base_env["OTEL_SDK_DISABLED"] = "true"
        try:
            with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as scratch:
                loadgen = build_loadgen(Path(scratch))
                for scenario in scenarios:  # idle servers cost no CPU while another is measured
                    start(scenario, base_env, args.workers)
                for _ in range(args.rounds):
                    for scenario in scenarios:
                        measure(scenario, args, loadgen)
        except BenchError as exc:
            print(f"bench.app_cache: {exc}")
            return 1
        finally:
            for scenario in scenarios:
                if scenario.server is not None:
                    scenario.server.stop()
                    opened = scenario.server.stderr.read_text().count("cache unavailable")
                    if opened:
                        print(f"  ! {scenario.name}: the cache breaker opened {opened} time(s)")
                    scenario.server.cleanup()

    header = ("scenario", "req/s", "p50 ms", "p99 ms", "failed", "loadgen CPU")
    print("{:<10} {:>9} {:>8} {:>8} {:>7} {:>12}".format(*header))
    for scenario in scenarios:
        print(
            f"{scenario.name:<10} {scenario.median('rps'):>9.0f} "
            f"{scenario.median('p50_ms'):>8.2f} {scenario.median('p99_ms'):>8.2f} "
            f"{sum(one.failed for one in scenario.rounds):>7} "
            f"{scenario.median('loadgen_cpu'):>11.0%}"
        )
    rates = {scenario.name: scenario.median("rps") for scenario in scenarios}
    ratios = {
        "cached/uncached": rates["cached"] / rates["uncached"],
        "cached/hello": rates["cached"] / rates["hello"],
        "cached/health": rates["cached"] / rates["health"],
    }
    print(f"cached / uncached = {ratios['cached/uncached']:.2f}x  (goal >= 3)")
    print(f"cached / hello    = {ratios['cached/hello']:.2f}x  (goal >= 0.7)")
    print(f"cached / health   = {ratios['cached/health']:.2f}x  (FastAPI's own floor)")
    summary = {name: round(rate) for name, rate in rates.items()}
    summary.update({name: round(ratio, 2) for name, ratio in ratios.items()})
    print(json.dumps(summary))
    # Every request counts: a failure anywhere makes the figures above suspect.
    return 1 if any(one.failed for scenario in scenarios for one in scenario.rounds) else 0


if __name__ == "__main__":
    raise SystemExit(main())
