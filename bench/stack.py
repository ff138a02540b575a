"""The deployed stack against the seed's topology and against the bare app, on the sandbox host.

    scripts/sandbox                      # deploy first (once)
    .venv/bin/python -m bench.stack [--connections 1000] [--duration 15] [--warmup 5] [--rounds 1]

Three ways to reach the same deployed app, measured in one run on the sandbox host:

* ``(a)`` this stack: nginx on :8080, the app under Gunicorn with Uvicorn workers on its Unix
  socket (``webstack-app.service``), exactly as ``site.yml`` deployed them;
* ``(b)`` the seed's topology: the same code, venv and settings under ``uvicorn --workers 2``
  on TCP 127.0.0.1:8000, behind the same nginx (a temporary server on 127.0.0.1:8091 with the
  same limits, headers and upstream keep-alive of 32);
* ``(c)`` the app's socket directly, no nginx: what the proxy costs.

Each is driven by ``tools/loadgen`` (built here, copied to the host, run there so the traffic
stays on the host's loopback) with ``--connections`` keep-alive connections for a cached
``GET /api/items/{id}`` (rotating over 100 items), the first list page, and a ``POST``. The
load generator comes from 127.0.0.1, which the sandbox inventory exempts from the per-address
limits (``nginx_rate_limit_exempt``); a last short run from 127.0.0.2, which is not exempt,
shows the limits answering 429. Any transport error or unexpected status in a throughput run,
or a limits run without 429s, makes the exit status 1.

What the run adds is removed at the end: the transient ``webstack-bench-uvicorn`` unit, its
environment file (a copy of the app's settings, secrets included, kept on tmpfs under /run
and readable by root only) and the nginx server (nginx is validated with ``nginx -t``
before each reload). The load generator stays in /var/lib/webstack-bench for the next run,
and the items it creates stay in the sandbox's database (named ``bench``).

The load generator shares the host's cores with nginx, the app, PostgreSQL, Valkey and the
collector; its own CPU time is printed beside each row so the numbers can be read with that in
mind. Tracing stays on, as deployed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import run

PROJECT = Path(__file__).resolve().parent.parent
TESTBED_KEY = Path("/var/lib/webstack-testbed/ssh/id_ed25519")
REMOTE_DIR = "/var/lib/webstack-bench"
# The uvicorn unit's settings hold the app's secrets: on tmpfs, gone at the latest on reboot.
SECRETS_DIR = "/run/webstack-bench"
BENCH_UNIT = "webstack-bench-uvicorn"
# Free on a sandbox host (8081 is nginx's status listener, nginx_status_listen).
BENCH_PORT = 8091
SEED_PORT = 8000
ITEM_COUNT = 100

# One run of tools/loadgen: its -json report (rps, p50_ms, p99_ms, statuses, errors, ...),
# plus "cpu_ns": the CPU time each group of units spent in the measured window.
LoadResult = dict[str, Any]

# Where the CPU goes, by systemd unit (systemd's accounting of each unit's cgroup, read at
# the start and the end of the measured window): the group a unit is counted in. The app is
# the deployed unit in (a) and (c) and the transient uvicorn unit in (b); the other app
# services idle in this bench and count as "other", with the exporters, Prometheus and the
# rest of the host's services. The load generator runs in a scope of its own, whose CPU
# time is read from /proc and from the generator's rusage.
CPU_GROUPS: tuple[tuple[str, str], ...] = (
    ("nginx", r"nginx\.service"),
    ("app", r"webstack-app\.service|webstack-bench-uvicorn\.service"),
    ("postgresql", r"postgresql.*\.service|patroni\.service"),
    ("valkey", r"valkey-server.*\.service"),
    ("collector", r"otelcol-contrib\.service"),
    ("journald", r"systemd-journald\.service"),
)
CPU_COLUMNS = (*(name for name, _ in CPU_GROUPS), "loadgen", "other")
POST_BODY = '{"name": "bench", "description": "created by bench/stack.py"}'


class BenchError(RuntimeError):
    """A failure with a message meant for the operator."""


@dataclass(frozen=True)
class Topology:
    key: str
    label: str
    target: str


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    args: tuple[str, ...]


class Host:
    """Commands on the sandbox host over SSH, as root through sudo."""

    def __init__(self, address: str, user: str, key: Path) -> None:
        self.ssh = [
            "ssh",
            "-i",
            str(key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{user}@{address}",
        ]

    def run(self, script: str, *, stdin: bytes | None = None, check: bool = True) -> str:
        """Run a bash script as root; its stdout is returned."""
        command = [*self.ssh, "sudo", "-n", "bash", "-euo", "pipefail", "-c", shlex.quote(script)]
        done = subprocess.run(command, input=stdin, capture_output=True, check=False)
        if check and done.returncode != 0:
            raise BenchError(
                f"on the host: {script.strip().splitlines()[0]} ... exited {done.returncode}:\n"
                + done.stderr.decode(errors="replace").strip()
            )
        return done.stdout.decode()


def build_loadgen(directory: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        raise BenchError("Go is needed to build tools/loadgen (scripts/bootstrap.sh checks for it)")
    output = directory / "loadgen"
    built = subprocess.run(
        [go, "build", "-trimpath", "-o", str(output), "."],
        cwd=PROJECT / "tools" / "loadgen",
        env={**os.environ, "CGO_ENABLED": "0"},
        check=False,
    )
    if built.returncode != 0:
        raise BenchError("go build of tools/loadgen failed (its errors are above)")
    return output


def nginx_bench_server(nginx_conf: str) -> str:
    """A server for the seed's topology with the deployed server's limits and headers."""
    headers = re.findall(r"^\s*(add_header .*;)\s*$", nginx_conf, re.MULTILINE)
    limit_req = re.search(r"^\s*(limit_req zone=per_ip_req .*;)\s*$", nginx_conf, re.MULTILINE)
    limit_conn = re.search(r"^\s*(limit_conn per_ip_conn .*;)\s*$", nginx_conf, re.MULTILINE)
    if not headers or not limit_req or not limit_conn:
        raise BenchError("the deployed nginx.conf lacks the headers or limits this bench copies")
    inner = "\n".join(f"    {line}" for line in headers)
    return f"""# Written by bench/stack.py for one run, removed after it: the seed's topology
# (the app under Uvicorn on TCP) behind this nginx, with the deployed server's limits
# and headers.
upstream bench_seed_uvicorn {{
    server 127.0.0.1:{SEED_PORT};
    keepalive 32;
}}

server {{
    listen 127.0.0.1:{BENCH_PORT};
{inner}

    location /api/ {{
        {limit_req.group(1)}
        {limit_conn.group(1)}
        proxy_pass http://bench_seed_uvicorn;
    }}
}}
"""


class Bench:
    def __init__(self, host: Host, options: argparse.Namespace) -> None:
        self.host = host
        self.options = options
        self.nginx = options.nginx_binary
        self.conf_file = f"{options.nginx_conf_dir}/conf.d/webstack-bench-seed.conf"

    # --- set-up and tear-down -------------------------------------------------------------

    def preflight(self) -> None:
        try:
            self.host.run(
                "curl -fsS -o /dev/null http://127.0.0.1:8080/health;"
                f" test -S {self.options.app_socket}"
            )
        except BenchError as error:
            raise BenchError(
                f"the sandbox stack does not answer on {self.options.host} (deploy it with "
                f"scripts/sandbox first):\n{error}"
            ) from error
        taken = self.host.run(f"ss -Htln 'sport = :{SEED_PORT} or sport = :{BENCH_PORT}'")
        if taken.strip():
            raise BenchError(
                f"ports {SEED_PORT} and {BENCH_PORT} must be free on the host:\n{taken}"
            )

    def install_loadgen(self, binary: Path) -> None:
        self.host.run(
            f"install -D -m 0755 /dev/stdin {REMOTE_DIR}/loadgen", stdin=binary.read_bytes()
        )

    def seed_items(self) -> list[int]:
        """Create the items the GETs read, and read each once so they are cached."""
        script = f"""
import json, urllib.request
ids = []
for n in range({ITEM_COUNT}):
    body = json.dumps({{"name": f"bench {{n}}", "description": "read by bench/stack.py"}}).encode()
    request = urllib.request.Request("http://127.0.0.1:8080/api/items", data=body,
                                     headers={{"Content-Type": "application/json"}})
    with urllib.request.urlopen(request) as answer:
        ids.append(json.load(answer)["id"])
for item in ids:
    urllib.request.urlopen(f"http://127.0.0.1:8080/api/items/{{item}}").read()
print(json.dumps(ids))
"""
        return json.loads(self.host.run(f"python3 -c {shlex.quote(script)}"))

    def start_seed_topology(self) -> None:
        o = self.options
        env_file = f"{SECRETS_DIR}/uvicorn.env"
        # The app's settings, but its own Prometheus directory: two servers must not share one.
        self.host.run(
            f"""
umask 077
mkdir -p {SECRETS_DIR}
grep -hv '^PROMETHEUS_MULTIPROC_DIR=' {o.env_dir}/app.env {o.env_dir}/service-app.env > {env_file}
echo 'PROMETHEUS_MULTIPROC_DIR=/run/{BENCH_UNIT}' >> {env_file}
systemd-run --unit {BENCH_UNIT} --collect --property Type=exec \
  --property User={o.app_user} --property Group={o.app_user} \
  --property WorkingDirectory={o.app_dir} --property EnvironmentFile={env_file} \
  --property RuntimeDirectory={BENCH_UNIT} --property LimitNOFILE=65535 \
  {o.app_dir}/venv/bin/uvicorn app.main:app --host 127.0.0.1 --port {SEED_PORT} \
  --workers 2 --log-level info
for _ in $(seq 60); do
  curl -fsS -o /dev/null http://127.0.0.1:{SEED_PORT}/health && break
  sleep 0.5
done
curl -fsS -o /dev/null http://127.0.0.1:{SEED_PORT}/health
"""
        )
        server = nginx_bench_server(self.host.run(f"cat {o.nginx_conf_dir}/nginx.conf"))
        self.host.run(
            f"install -m 0644 /dev/stdin {self.conf_file} && {self.nginx} -t -q"
            " && systemctl reload nginx",
            stdin=server.encode(),
        )
        self.host.run(
            f"""
for _ in $(seq 40); do
  curl -fsS -o /dev/null http://127.0.0.1:{BENCH_PORT}/api/items && exit 0
  sleep 0.25
done
curl -fsS -o /dev/null http://127.0.0.1:{BENCH_PORT}/api/items
"""
        )

    def clean_up(self) -> None:
        self.host.run(
            f"""
if [ -e {self.conf_file} ]; then
  rm -f {self.conf_file}
  {self.nginx} -t -q && systemctl reload nginx
fi
systemctl stop {BENCH_UNIT} 2>/dev/null || true
rm -rf {SECRETS_DIR}
""",
            check=False,
        )

    # --- measuring ------------------------------------------------------------------------

    def load(
        self,
        target: str,
        args: tuple[str, ...],
        *,
        connections: int,
        duration: float,
        warmup: float,
        bind: str | None = None,
    ) -> LoadResult:
        command = shlex.join(
            loadgen_argv(
                target, args, connections=connections, duration=duration, warmup=warmup, bind=bind
            )
        )
        return accounted(self.host.run(accounting_script(command, warmup)))


def loadgen_argv(
    target: str,
    args: tuple[str, ...],
    *,
    connections: int,
    duration: float,
    warmup: float,
    bind: str | None = None,
    binary: str = f"{REMOTE_DIR}/loadgen",
) -> list[str]:
    """One run of tools/loadgen, its report as JSON; ``duration`` is the measured time,
    after ``warmup``. ``binary`` is the host's copy unless given (bench/app_cache.py runs
    one built here against local servers)."""
    command = [
        binary,
        "-json",
        "-target",
        target,
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "-warmup",
        f"{warmup}s",
        *args,
    ]
    if bind:
        command += ["-bind", bind]
    return command


def accounting_script(loadgen: str, warmup: float) -> str:
    """Run the load generator on the host; print its report and the CPU time of every
    running service (CPUUsageNSec) and of the generator at the start and the end of the
    measured window. The end includes the generator closing its connections."""
    return f"""
out=$(mktemp)
trap 'rm -f "$out"' EXIT
snapshot() {{
  units=$(systemctl list-units --type=service --state=running --no-legend --plain \\
          | awk '{{print $1}}')
  systemctl show --property=Id,CPUUsageNSec $units | sed "s/^/$1 /"
}}
# A scope of its own: otherwise the generator counts in ssh.service, with "other".
systemd-run --scope --quiet --collect --unit="webstack-bench-loadgen-$$" {loadgen} >"$out" &
generator=$!
sleep {warmup}
snapshot before
echo "before generator $(awk '{{print $14 + $15}}' /proc/$generator/stat) $(getconf CLK_TCK)"
wait "$generator"
snapshot after
echo "report $(tr -d '\\n' <"$out")"
"""


def accounted(output: str) -> LoadResult:
    """The generator's report with ``cpu_ns``: CPU nanoseconds by group (CPU_COLUMNS)."""
    report: LoadResult | None = None
    usage: dict[str, dict[str, int]] = {"before": {}, "after": {}}
    generator_before = 0.0
    # systemctl show prints one block of properties per unit, blocks apart by a blank line.
    block: dict[str, str] = {}
    block_moment = ""

    def flush() -> None:
        spent = block.get("CPUUsageNSec", "")
        if block_moment and "Id" in block and spent.isdigit():  # "[not set]": no accounting
            usage[block_moment][block["Id"]] = int(spent)
        block.clear()

    for line in output.splitlines():
        moment, _, rest = line.partition(" ")
        if moment in usage and "=" in rest and not rest.startswith("generator "):
            if moment != block_moment:
                flush()
                block_moment = moment
            name, _, value = rest.partition("=")
            block[name] = value
            continue
        flush()
        if moment == "report":
            report = json.loads(rest)
        elif moment == "before" and rest.startswith("generator "):
            _, ticks, per_second = rest.split()
            generator_before = float(ticks) / float(per_second)
    flush()
    if report is None:
        raise BenchError(f"the load generator printed no report:\n{output[-2000:]}")
    cpu = dict.fromkeys(CPU_COLUMNS, 0)
    for unit, after in usage["after"].items():
        spent = after - usage["before"].get(unit, after)
        group = next((name for name, units in CPU_GROUPS if re.fullmatch(units, unit)), "other")
        cpu[group] += max(spent, 0)
    cpu["loadgen"] = int((float(report["loadgen_cpu_seconds"]) - generator_before) * 1e9)
    report["cpu_ns"] = cpu
    return report


def cpu_per_1000(result: LoadResult) -> dict[str, float]:
    """CPU milliseconds each group spent per 1000 measured requests, and their total."""
    requests = max(int(result["requests"]), 1)
    per = {name: ns / 1e6 / requests * 1000 for name, ns in result["cpu_ns"].items()}
    per["total"] = sum(per.values())
    return per


def endpoints(item_ids: list[int]) -> list[Endpoint]:
    item_paths: list[str] = []
    for item in item_ids:
        item_paths += ["-path", f"/api/items/{item}"]
    return [
        Endpoint("get", "GET /api/items/{id} (cached)", tuple(item_paths)),
        Endpoint("list", "GET /api/items?skip=0&limit=20", ("-path", "/api/items?skip=0&limit=20")),
        Endpoint(
            "post",
            "POST /api/items",
            (
                "-method",
                "POST",
                "-path",
                "/api/items",
                "-body",
                POST_BODY,
                "-header",
                "Content-Type: application/json",
                # A fresh key per POST, as every write through nginx carries (nginx makes one
                # up when the client sends none): (c) then stores one too, like (a) and (b).
                "-idempotency-key",
            ),
        ),
    ]


def clean(result: LoadResult) -> bool:
    return result["errors_total"] == 0 and result["non_2xx_total"] == 0


LABEL_WIDTH = 44
CPU_HEADS = (*CPU_COLUMNS, "total")


def row(label: str, result: LoadResult) -> str:
    errors = int(result["errors_total"]) + int(result["non_2xx_total"])
    return (
        f"  {label:<{LABEL_WIDTH}} {result['rps']:>8.0f} {result['p50_ms']:>8.1f}"
        f" {result['p99_ms']:>8.1f} {errors:>7}"
    )


def cpu_row(label: str, result: LoadResult) -> str:
    per = cpu_per_1000(result)
    return f"  {label:<{LABEL_WIDTH}}" + "".join(f" {per[name]:>10.0f}" for name in CPU_HEADS)


def goals(median: dict[tuple[str, str], LoadResult]) -> list[str]:
    """Issue 15's goals, each with its figure and whether it is met."""
    a, b = median[("get", "a")], median[("get", "b")]
    cpu_a, cpu_b = cpu_per_1000(a), cpu_per_1000(b)
    journald = cpu_a["journald"] / cpu_a["total"] if cpu_a["total"] else 0.0
    list_a, list_c = float(median[("list", "a")]["rps"]), float(median[("list", "c")]["rps"])
    checks = [
        ("cached GET req/s (a)/(b)", float(a["rps"]) / max(float(b["rps"]), 1), ">=", 1.25),
        ("cached GET CPU per request (a)/(b)", cpu_a["total"] / max(cpu_b["total"], 1), "<=", 0.75),
        ("journald's share of the CPU, cached GET (a)", journald, "<=", 0.05),
        ("cached GET p99 through nginx (a), ms", float(a["p99_ms"]), "<=", 1500),
        ("list page req/s (a)/(c)", list_a / max(list_c, 1), ">=", 0.9),
    ]
    lines = []
    for label, value, relation, goal in checks:
        met = value >= goal if relation == ">=" else value <= goal
        verdict = "met" if met else "NOT MET"
        lines.append(f"  {label:<46} {value:>8.2f}  goal {relation} {goal:<6} {verdict}")
    return lines


def plot(
    median: dict[tuple[str, str], LoadResult],
    measured: list[Endpoint],
    topologies: list[Topology],
    directory: Path,
) -> list[Path]:
    """Two PNGs: req/s with p50/p99 per configuration, and CPU per request by unit."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    names = [topology.key for topology in topologies]
    width = 0.8 / len(names)

    figure, (rate, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, topology in enumerate(topologies):
        offsets = [e + (index - 1) * width for e in range(len(measured))]
        results = [median[(endpoint.key, topology.key)] for endpoint in measured]
        rate.bar(offsets, [float(r["rps"]) for r in results], width, label=topology.label)
        latency.bar(offsets, [float(r["p99_ms"]) for r in results], width, label=topology.label)
        latency.scatter(offsets, [float(r["p50_ms"]) for r in results], color="black", zorder=3)
    latency.set_yscale("log")  # the seed's p99 can be ten times the others
    for axes, title in ((rate, "requests per second"), (latency, "p99 ms (bars), p50 ms (dots)")):
        axes.set_xticks(range(len(measured)), [endpoint.label for endpoint in measured])
        axes.tick_params(axis="x", labelsize=7)
        axes.set_title(title)
    rate.legend(fontsize=7)
    figure.tight_layout()
    throughput = directory / "bench-stack-throughput.png"
    figure.savefig(throughput, dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(12, 4.5))
    labels = [f"{endpoint.key} ({key})" for endpoint in measured for key in names]
    bottom = [0.0] * len(labels)
    for column in CPU_COLUMNS:
        values = [
            cpu_per_1000(median[(endpoint.key, key)])[column]
            for endpoint in measured
            for key in names
        ]
        axes.bar(labels, values, bottom=bottom, label=column)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_ylabel("CPU ms per 1000 requests")
    axes.set_title(
        "Where the CPU goes, by systemd unit: (a) this stack, (b) the seed's, (c) no nginx"
    )
    axes.legend(fontsize=7, ncol=4)
    figure.tight_layout()
    cpu = directory / "bench-stack-cpu.png"
    figure.savefig(cpu, dpi=110)
    plt.close(figure)
    return [throughput, cpu]


def add_host_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that reach the sandbox host and that Bench's set-up reads (the stack's
    socket, nginx's binary and configuration), shared by the benchmarks run on it."""
    parser.add_argument("--host", default="10.213.0.10", help="the sandbox host's address")
    parser.add_argument("--user", default="deploy")
    parser.add_argument("--key", type=Path, default=TESTBED_KEY)
    parser.add_argument("--app-socket", default="/run/webstack/app.sock")
    parser.add_argument("--nginx-conf-dir", default="/etc/nginx")
    parser.add_argument("--nginx-binary", default="/usr/local/sbin/nginx")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_host_arguments(parser)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the median is reported")
    parser.add_argument("--app-dir", default="/opt/webstack/current")
    parser.add_argument("--app-user", default="webstack-app")
    parser.add_argument("--env-dir", default="/etc/webstack")
    parser.add_argument(
        "--limited-address",
        default="127.0.0.2",
        help="a source address not in nginx_rate_limit_exempt",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="also write the figures as PNGs into DIR (docs/: those docs/benchmarks.md shows)",
    )
    options = parser.parse_args()

    host = Host(options.host, options.user, options.key)
    bench = Bench(host, options)
    topologies = [
        Topology("a", "(a) nginx -> Gunicorn/Uvicorn, Unix socket", "http://127.0.0.1:8080"),
        Topology(
            "b", "(b) nginx -> uvicorn --workers 2, TCP :8000", f"http://127.0.0.1:{BENCH_PORT}"
        ),
        Topology("c", "(c) the app's socket, no nginx", f"unix:{options.app_socket}"),
    ]
    failed = False
    try:
        bench.preflight()
        with tempfile.TemporaryDirectory() as scratch:
            bench.install_loadgen(build_loadgen(Path(scratch)))
        measured = endpoints(bench.seed_items())
        bench.start_seed_topology()
        cores = host.run("nproc").strip()
        print(
            f"sandbox host {options.host} ({cores} cores shared with the load generator); "
            f"{options.connections} connections, {options.warmup:g} s warm-up + "
            f"{options.duration:g} s measured per run, {options.rounds} round(s), median shown\n"
        )
        results: dict[tuple[str, str], list[LoadResult]] = {}
        for _ in range(options.rounds):
            for endpoint in measured:
                for topology in topologies:
                    result = bench.load(
                        topology.target,
                        endpoint.args,
                        connections=options.connections,
                        duration=options.duration,
                        warmup=options.warmup,
                    )
                    results.setdefault((endpoint.key, topology.key), []).append(result)
                    failed |= not clean(result)

        print(f"  {'':<{LABEL_WIDTH}} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        median: dict[tuple[str, str], LoadResult] = {}
        for endpoint in measured:
            print(endpoint.label)
            for topology in topologies:
                runs = sorted(results[(endpoint.key, topology.key)], key=lambda r: float(r["rps"]))
                median[(endpoint.key, topology.key)] = chosen = runs[len(runs) // 2]
                print(row(topology.label, chosen))
                for bad in (r for r in runs if not clean(r)):
                    print(f"    errors: {bad['errors']} statuses: {bad['statuses']}")
        # systemd's accounting of each unit's cgroup: hardly moved by the machine's noise.
        print("\nCPU milliseconds per 1000 requests, by unit (of the median run):")
        print(f"  {'':<{LABEL_WIDTH}}" + "".join(f" {name:>10}" for name in CPU_HEADS))
        for endpoint in measured:
            print(endpoint.label)
            for topology in topologies:
                print(cpu_row(topology.label, median[(endpoint.key, topology.key)]))
        print()
        for endpoint in measured:
            per = {t: cpu_per_1000(median[(endpoint.key, t)])["total"] for t in "abc"}
            print(
                f"{endpoint.label:<34} CPU per request (a)/(b) {per['a'] / max(per['b'], 1):.2f}"
                f"   (a)/(c) {per['a'] / max(per['c'], 1):.2f}"
            )
        print()
        for endpoint in measured:
            a, b, c = (float(median[(endpoint.key, t)]["rps"]) for t in "abc")
            if not b or not c:  # a run without one answer: its errors are listed above
                print(f"{endpoint.label:<34} no ratio: a baseline answered nothing")
                continue
            print(f"{endpoint.label:<34} req/s (a)/(b) {a / b:.2f}   (a)/(c) {a / c:.2f}")
        print("\nGoals (issue 15):")
        print("\n".join(goals(median)))
        if options.plot:
            for written in plot(median, measured, topologies, options.plot):
                print(f"wrote {written}")

        limited = bench.load(
            "http://127.0.0.1:8080",
            measured[0].args,
            connections=200,
            duration=5,
            warmup=0,
            bind=options.limited_address,
        )
        exempt_note = (
            "429s expected" if limited["statuses"].get("429") else "NO 429: limits did not engage"
        )
        print(
            f"\nlimits: 200 connections from {options.limited_address} (not exempt) for 5 s -> "
            f"statuses {limited['statuses']}, errors {limited['errors']} ({exempt_note})"
        )
        failed |= not limited["statuses"].get("429")
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    finally:
        bench.clean_up()
    if failed:
        print("FAILED: errors or unexpected statuses above", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run(main)
