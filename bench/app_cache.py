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
round is reported. A load generator in this process keeps ``--connections`` HTTP/1.1
keep-alive connections busy (one request in flight on each, as nginx's upstream
keepalive would) for ``--warmup`` then ``--duration`` seconds, and prints requests per
second, p50 and p99 latency, and the ratios the issue sets as goals (cached >= 3x
uncached, cached >= 0.7x hello).

Worker recycling is off during the run. Tracing is off (``OTEL_SDK_DISABLED=true``)
unless ``--tracing`` is given, in which case spans are made but not exported. The load
generator shares the machine's cores with the servers; its own CPU use is printed so the
numbers can be read with that in mind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import cast

import httpx

from tests.servers import GunicornServer, clean_env, running_servers

try:
    import uvloop
except ImportError:  # pragma: no cover - the bench dependency group has it on Linux
    uvloop = None  # type: ignore[assignment]

MAX_REQUESTS = 5_000_000  # a bound on one phase, whatever the duration


@dataclass
class Phase:
    """Counts and latencies of one load phase."""

    name: str
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0  # answers other than 200
    dropped: int = 0  # requests lost when the server closed their connection (a proxy retries)
    started: float = 0.0
    ended: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def rate(self) -> float:
        return len(self.latencies_ns) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


class LoadRun:
    """Keeps ``connections`` connections busy; reopens any the server closes, as nginx would."""

    def __init__(self, socket_path: str, request: bytes, connections: int) -> None:
        self.socket_path = socket_path
        self.request = request
        self.connections = connections
        self.phase: Phase | None = None
        self.running = True
        self.open_connections = 0
        self.reconnects = 0
        self.all_closed = asyncio.Event()

    async def start(self) -> None:
        for _ in range(self.connections):
            await self.connect()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.open_connections += 1
        try:
            await loop.create_unix_connection(lambda: Connection(self), self.socket_path)
        except OSError:
            self.closed(failed=True)

    def closed(self, failed: bool) -> None:
        self.open_connections -= 1
        if failed and self.running and self.phase is not None:
            self.phase.dropped += 1
        if self.running:
            self.reconnects += 1
            asyncio.get_running_loop().create_task(self.connect())
        elif self.open_connections == 0:
            self.all_closed.set()

    def record(self, status: int, latency_ns: int) -> None:
        phase = self.phase
        if phase is None:
            return
        if status == 200:
            phase.latencies_ns.append(latency_ns)
        else:
            phase.errors += 1
        if len(phase.latencies_ns) >= MAX_REQUESTS:
            self.running = False


class Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight at a time."""

    def __init__(self, run: LoadRun) -> None:
        self.run = run
        self.buffer = bytearray()
        self.sent_at = 0
        self.in_flight = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        if not self.run.running:
            self.transport.close()
            return
        self.in_flight = True
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError(f"response without content-length: {head!r}")
            line_end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : line_end if line_end > 0 else None])
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            self.in_flight = False
            self.run.record(int(head[9:12]), time.perf_counter_ns() - self.sent_at)
            del self.buffer[:total]
            if b"\r\nconnection: close" in head:
                # A worker finishing (max_requests, reload): open another connection.
                self.transport.close()
                return
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.closed(failed=self.in_flight)


async def load(
    socket_path: str, path: str, connections: int, warmup: float, duration: float
) -> tuple[Phase, int]:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nX-Forwarded-For: 127.0.0.1\r\n"
        "X-Forwarded-Proto: http\r\n\r\n"
    ).encode()
    run = LoadRun(socket_path, request, connections)
    run.phase = Phase("warmup")
    await run.start()
    await asyncio.sleep(warmup)
    measured = Phase("measure", started=time.perf_counter())
    reconnects_before = run.reconnects
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    run.phase = measured
    await asyncio.sleep(duration)
    run.running = False
    measured.ended = time.perf_counter()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    measured.cpu_seconds = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    run.phase = None
    await asyncio.wait_for(run.all_closed.wait(), timeout=30)
    return measured, run.reconnects - reconnects_before


@dataclass
class Scenario:
    name: str
    target: str
    path: str
    env: dict[str, str]
    phases: list[Phase] = field(default_factory=list)
    server: GunicornServer | None = None

    @property
    def rate(self) -> float:
        """The median over the rounds (robust to a round disturbed by another process)."""
        return statistics.median(phase.rate for phase in self.phases)

    def percentile_ms(self, fraction: float) -> float:
        pooled = Phase(self.name)
        for phase in self.phases:
            pooled.latencies_ns.extend(phase.latencies_ns)
        return pooled.percentile_ms(fraction)


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


def measure(scenario: Scenario, args: argparse.Namespace) -> None:
    assert scenario.server is not None
    runner = uvloop.run if uvloop is not None else asyncio.run
    phase, reconnects = runner(
        load(
            str(scenario.server.socket), scenario.path, args.connections, args.warmup, args.duration
        )
    )
    phase.name = scenario.name
    scenario.phases.append(phase)
    if reconnects:
        print(f"  ! {scenario.name}: the server closed {reconnects} connection(s)")


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
            for scenario in scenarios:  # idle servers cost no CPU while another is measured
                start(scenario, base_env, args.workers)
            for _ in range(args.rounds):
                for scenario in scenarios:
                    measure(scenario, args)
        finally:
            for scenario in scenarios:
                if scenario.server is not None:
                    scenario.server.stop()
                    opened = scenario.server.stderr.read_text().count("cache unavailable")
                    if opened:
                        print(f"  ! {scenario.name}: the cache breaker opened {opened} time(s)")
                    scenario.server.cleanup()

    header = ("scenario", "req/s", "p50 ms", "p99 ms", "errors", "dropped", "loadgen CPU")
    print("{:<10} {:>9} {:>8} {:>8} {:>7} {:>8} {:>12}".format(*header))
    for scenario in scenarios:
        seconds = sum(phase.seconds for phase in scenario.phases)
        cpu = sum(phase.cpu_seconds for phase in scenario.phases)
        print(
            f"{scenario.name:<10} {scenario.rate:>9.0f} {scenario.percentile_ms(0.5):>8.2f} "
            f"{scenario.percentile_ms(0.99):>8.2f} {sum(p.errors for p in scenario.phases):>7} "
            f"{sum(p.dropped for p in scenario.phases):>8} {cpu / seconds:>11.0%}"
        )
    rates = {scenario.name: scenario.rate for scenario in scenarios}
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
