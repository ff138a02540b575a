"""Where one app worker's CPU goes under the cached-GET load: a py-spy profile.

    scripts/sandbox                      # deploy first (once)
    .venv/bin/python -m bench.profile [--seconds 20] [--connections 1000] [--svg PATH]

The same load as ``bench/stack.py``'s cached ``GET /api/items/{id}`` through nginx
(``tools/loadgen`` on the host, 1000 keep-alive connections from 127.0.0.1, rotating over
100 items). After the warm-up, py-spy (the ``bench`` dependency group's static binary,
copied to the host) samples the first Gunicorn worker of ``webstack-app`` 100 times a
second for ``--seconds``, without pausing it (``--nonblocking``), twice at once: a flame
graph SVG for people (``--svg``) and the raw folded stacks for this script (kept with
``--folded``). Idle samples (a thread waiting in epoll or on a lock) are left out, so the
percentages are shares of the worker's busy time, each thread's included.

It prints the load's figures (a run with errors exits 1), then the busy samples by thread,
by where the code lives (FastAPI/Starlette, OpenTelemetry, asyncio, ...), by function on
its own (self) and by function on the stack (total, without the server's and asyncio's
plumbing, which is on every stack); docs/benchmarks.md's "Profile" section reads them.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import run
from bench.stack import (
    REMOTE_DIR,
    Bench,
    BenchError,
    Host,
    add_host_arguments,
    build_loadgen,
    endpoints,
    loadgen_argv,
)

SVG_DEFAULT = Path(__file__).resolve().parent.parent / "docs" / "profile-cached-get.svg"
# Where a frame's code lives, by its full file path; the first match wins.
PLACES = (
    ("opentelemetry", re.compile(r"site-packages/opentelemetry")),
    ("prometheus_client", re.compile(r"site-packages/prometheus_client")),
    ("starlette/fastapi", re.compile(r"site-packages/(starlette|fastapi)/")),
    ("pydantic", re.compile(r"site-packages/pydantic")),
    ("sqlalchemy/asyncpg", re.compile(r"site-packages/(sqlalchemy|asyncpg)/")),
    ("redis client", re.compile(r"site-packages/(redis|valkey)/")),
    (
        "uvicorn/gunicorn/h11/httptools",
        re.compile(r"site-packages/(uvicorn\w*|gunicorn|h11|httptools)/"),
    ),
    ("other libraries", re.compile(r"site-packages/")),
    ("the app", re.compile(r"/app/")),
    ("asyncio", re.compile(r"/asyncio/")),
    ("logging", re.compile(r"/logging/")),
)
# Frameworks' and the standard library's plumbing, left out of the "on the stack" table,
# where they would fill every row.
PLUMBING = {"uvicorn/gunicorn/h11/httptools", "asyncio", "python (other)"}
FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
THREAD = re.compile(r"^thread \(\w+\): ?(?P<name>.*)$")


def place(filename: str) -> str:
    for name, pattern in PLACES:
        if pattern.search(filename):
            return name
    return "python (other)"


@dataclass
class Profile:
    """py-spy's raw (folded) stacks, counted: per thread, per place (self samples), per
    function the samples it was running in (self) and on the stack in (total)."""

    samples: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    places: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)


def parse_folded(text: str) -> Profile:
    profile = Profile()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = THREAD.match(frames[0])
        if thread:
            frames = frames[1:]
        if not frames:
            continue
        profile.samples += n
        profile.threads[(thread["name"] if thread else "") or "(unnamed)"] += n
        labelled = []
        for frame in frames:
            match = FRAME.match(frame)
            function, filename = (match["function"], match["file"]) if match else (frame, "")
            short = "/".join(filename.split("/")[-2:])
            labelled.append((f"{function} ({short})", place(filename)))
        leaf, leaf_place = labelled[-1]
        profile.own[leaf] += n
        profile.places[leaf_place] += n
        for label in {label for label, where in labelled if where not in PLUMBING}:
            profile.total[label] += n
    return profile


def worker_pid(host: Host, unit: str) -> int:
    master = host.run(f"systemctl show --property MainPID --value {unit}").strip()
    if not master or master == "0":
        raise BenchError(f"{unit} is not running on the host")
    workers = host.run(f"pgrep -P {master} || true").split()
    if not workers:
        raise BenchError(f"{unit} (PID {master}) has no workers")
    return int(workers[0])


def profile_script(loadgen: str, pid: int, warmup: float, seconds: float) -> str:
    """Load in the background; both py-spy samplers after the warm-up; print the load's
    report, then a separator, then the folded stacks."""
    spy = f"{REMOTE_DIR}/py-spy record --pid {pid} --duration {int(seconds)} --rate 100"
    spy += " --nonblocking --threads --full-filenames"
    return f"""
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
{loadgen} >"$out/load.json" &
load=$!
sleep {warmup}
{spy} --format flamegraph --output "$out/profile.svg" >/dev/null 2>"$out/svg.err" &
svg=$!
{spy} --format raw --output "$out/profile.txt" >/dev/null 2>"$out/raw.err" || {{
  cat "$out/raw.err" >&2; exit 1; }}
wait "$svg" || {{ cat "$out/svg.err" >&2; exit 1; }}
wait "$load"
install -m 0644 "$out/profile.svg" {REMOTE_DIR}/profile.svg
cat "$out/load.json"
echo '---'
cat "$out/profile.txt"
"""


def table(title: str, counts: Counter[str], samples: int, top: int) -> list[str]:
    lines = [title]
    for label, n in counts.most_common(top):
        lines.append(f"  {100 * n / samples:5.1f} %  {label}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_host_arguments(parser)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="sampled seconds")
    parser.add_argument("--unit", default="webstack-app", help="the service to profile")
    parser.add_argument("--top", type=int, default=12, help="rows per table")
    parser.add_argument("--svg", type=Path, default=SVG_DEFAULT, help="the flame graph")
    parser.add_argument("--folded", type=Path, help="also keep py-spy's raw stacks here")
    options = parser.parse_args()

    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists() and (found := shutil.which("py-spy")):
        spy = Path(found)
    if not spy.exists():
        print("py-spy is not installed: it is in the bench group (uv sync)", file=sys.stderr)
        return 2
    host = Host(options.host, options.user, options.key)
    bench = Bench(host, options)
    try:
        bench.preflight()
        with tempfile.TemporaryDirectory() as scratch:
            bench.install_loadgen(build_loadgen(Path(scratch)))
        host.run(f"install -D -m 0755 /dev/stdin {REMOTE_DIR}/py-spy", stdin=spy.read_bytes())
        items = bench.seed_items()
        pid = worker_pid(host, options.unit)
        loadgen = shlex.join(
            loadgen_argv(
                "http://127.0.0.1:8080",
                endpoints(items)[0].args,  # the cached GET, as bench/stack.py sends it
                connections=options.connections,
                duration=options.warmup + options.seconds + 3,
                warmup=options.warmup,
            )
        )
        output = host.run(profile_script(loadgen, pid, options.warmup, options.seconds))
        report_text, _, folded = output.partition("\n---\n")
        report = json.loads(report_text)
        svg = host.run(f"cat {REMOTE_DIR}/profile.svg")
    except BenchError as error:
        print(f"bench.profile: {error}", file=sys.stderr)
        return 1

    options.svg.write_text(svg)
    if options.folded:
        options.folded.write_text(folded)
    profile = parse_folded(folded)
    samples = profile.samples
    errors = int(report["errors_total"]) + int(report["non_2xx_total"])
    print(
        f"load: cached GET through nginx, {options.connections} connections:"
        f" {report['rps']:.0f} req/s, p50 {report['p50_ms']:.1f} ms,"
        f" p99 {report['p99_ms']:.1f} ms, errors {errors}"
    )
    print(f"worker PID {pid} of {options.unit}: {samples} busy samples in {options.seconds:.0f} s")
    if not samples:
        print("no samples: py-spy saw the worker idle the whole time", file=sys.stderr)
        return 1
    lines = [
        *table("busy samples by thread:", profile.threads, samples, options.top),
        *table("self time by where the code lives:", profile.places, samples, options.top),
        *table("self time by function:", profile.own, samples, options.top),
        *table(
            "on the stack, by function (without the server's and asyncio's plumbing):",
            profile.total,
            samples,
            options.top,
        ),
    ]
    print("\n".join(lines))
    print(f"flame graph: {options.svg}")
    return 1 if errors else 0


if __name__ == "__main__":
    run(main)
