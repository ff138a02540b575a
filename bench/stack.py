"""The deployed stack against the seed's topology and against the bare app, on the sandbox host.

    scripts/sandbox                      # deploy first (once)
    uv run python -m bench.stack [--connections 1000] [--duration 15] [--warmup 5] [--rounds 1]

Three ways to reach the same deployed app, measured in one run on the sandbox host:

* ``(a)`` this stack: nginx on :8080, the app under Gunicorn with Uvicorn workers on its Unix
  socket (``webstack-app.service``), exactly as ``site.yml`` deployed them;
* ``(b)`` the seed's topology: the same code, venv and settings under ``uvicorn --workers 2``
  on TCP 127.0.0.1:8000, behind the same nginx (a temporary server on 127.0.0.1:8081 with the
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
BENCH_PORT = 8081
SEED_PORT = 8000
ITEM_COUNT = 100

# One run of tools/loadgen: its -json report (rps, p50_ms, p99_ms, statuses, errors, ...).
LoadResult = dict[str, Any]
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
        command = [
            f"{REMOTE_DIR}/loadgen",
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
        result: LoadResult = json.loads(self.host.run(shlex.join(command)))
        return result


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
            ),
        ),
    ]


def clean(result: LoadResult) -> bool:
    return result["errors_total"] == 0 and result["non_2xx_total"] == 0


def row(label: str, result: LoadResult) -> str:
    errors = int(result["errors_total"]) + int(result["non_2xx_total"])
    return (
        f"  {label:<44} {result['rps']:>8.0f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f}"
        f" {errors:>7} {result['loadgen_cpu_seconds']:>8.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="10.213.0.10", help="the sandbox host's address")
    parser.add_argument("--user", default="deploy")
    parser.add_argument("--key", type=Path, default=TESTBED_KEY)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the median is reported")
    parser.add_argument("--app-socket", default="/run/webstack/app.sock")
    parser.add_argument("--app-dir", default="/opt/webstack/current")
    parser.add_argument("--app-user", default="webstack-app")
    parser.add_argument("--env-dir", default="/etc/webstack")
    parser.add_argument("--nginx-conf-dir", default="/etc/nginx")
    parser.add_argument("--nginx-binary", default="/usr/local/sbin/nginx")
    parser.add_argument(
        "--limited-address",
        default="127.0.0.2",
        help="a source address not in nginx_rate_limit_exempt",
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

        print(f"  {'':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'gen CPU':>8}")
        median: dict[tuple[str, str], LoadResult] = {}
        for endpoint in measured:
            print(endpoint.label)
            for topology in topologies:
                runs = sorted(results[(endpoint.key, topology.key)], key=lambda r: float(r["rps"]))
                median[(endpoint.key, topology.key)] = chosen = runs[len(runs) // 2]
                print(row(topology.label, chosen))
                for bad in (r for r in runs if not clean(r)):
                    print(f"    errors: {bad['errors']} statuses: {bad['statuses']}")
        print()
        for endpoint in measured:
            a, b, c = (float(median[(endpoint.key, t)]["rps"]) for t in "abc")
            goals = "  (goals: (a)/(b) >= 1.25, (a)/(c) >= 0.85)" if endpoint.key == "get" else ""
            if not b or not c:  # a run without one answer: its errors are listed above
                print(f"{endpoint.label:<34} no ratio: a baseline answered nothing")
                continue
            print(f"{endpoint.label:<34} (a)/(b) {a / b:.2f}   (a)/(c) {a / c:.2f}{goals}")

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
