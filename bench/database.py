"""Synchronous replication and PgBouncer, measured side by side on a Patroni cluster.

    molecule converge -s database        # a site with two or more db hosts, deployed
    .venv/bin/python -m bench.database [--app-host 10.213.0.63] [--clients 8] [--duration 15]

Everything runs on an app host, on the path the app's own writes take: pgbench (from the
primary's PostgreSQL packages, copied over; it needs only libpq) connects as the app's role,
with the app's password, to HAProxy on the app host, which forwards to the primary. Each
transaction is one autocommitted ``INSERT`` of a small row, the shape of the app's writes.
Four comparisons, every configuration measured in each round, rounds interleaved so the
machine's noise falls on all of them alike:

* ``async`` vs ``sync``: Patroni's ``synchronous_mode`` off and on (set through
  ``patronictl edit-config``, as the patroni role's ``patroni_synchronous_mode`` does): a
  commit then also waits for a replica to flush it;
* ``direct`` vs ``pgbouncer``: connections straight to HAProxy, or through PgBouncer
  (Debian's package, run as a transient unit on the app host in transaction pooling mode, in
  front of the same HAProxy);
* ``kept`` vs ``per transaction``: connections kept open (what the app's pools do), or a new
  connection for every transaction (``pgbench -C``: what PgBouncer is for).

The run leaves the site as it found it: ``synchronous_mode`` is set back to what Patroni had,
the scratch table (``webstack_bench_writes`` in the app's database) is dropped, the transient
PgBouncer stopped. PgBouncer's package stays installed on the app host (its own unit is
disabled). Exit status 1 when a run had a failed transaction.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from bench import run
from bench.stack import TESTBED_KEY, BenchError, Host

PATRONICTL = "patronictl --config-file /etc/patroni/config.yml"
TABLE = "webstack_bench_writes"
WORK_DIR = "/run/webstack-bench-db"  # tmpfs: the PgBouncer user list holds a password
PGBOUNCER_UNIT = "webstack-bench-pgbouncer"
PGBOUNCER_PORT = 6499
PGBENCH = f"{WORK_DIR}/pgbench"
# What pgbench needs of the app's settings: how the app reaches PostgreSQL.
DB_SETTINGS = ("APP_DB_HOST", "APP_DB_PORT", "APP_DB_NAME", "APP_DB_USER", "APP_DB_PASS")
SCRIPT = f"INSERT INTO {TABLE} (payload) VALUES ('written by bench/database.py');\n"


@dataclass(frozen=True)
class Run:
    tps: float
    p50_ms: float
    p99_ms: float
    transactions: int
    failed: int


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    sync: bool
    pgbouncer: bool
    per_transaction: bool


CONFIGS = [
    Config("ak", "async, direct, kept", sync=False, pgbouncer=False, per_transaction=False),
    Config("sk", "sync,  direct, kept", sync=True, pgbouncer=False, per_transaction=False),
    Config("akb", "async, pgbouncer, kept", sync=False, pgbouncer=True, per_transaction=False),
    Config("ac", "async, direct, per transaction", sync=False, pgbouncer=False,
           per_transaction=True),
    Config("acb", "async, pgbouncer, per transaction", sync=False, pgbouncer=True,
           per_transaction=True),
]  # fmt: skip


class Bench:
    def __init__(self, app: Host, db: Host, options: argparse.Namespace) -> None:
        self.app = app
        self.db = db
        self.options = options
        self.sync_before: bool | None = None
        self.db_env: dict[str, str] = {}

    # -- the cluster ---------------------------------------------------------------------
    def members(self) -> list[dict]:
        return json.loads(self.db.run(f"{PATRONICTL} list -f json"))

    def synchronous_mode(self) -> bool:
        shown = self.db.run(f"{PATRONICTL} show-config")
        match = re.search(r"^synchronous_mode:\s*(\S+)", shown, re.MULTILINE)
        return bool(match) and match.group(1).lower() == "true"

    def set_synchronous_mode(self, on: bool) -> None:
        value = "true" if on else "false"
        self.db.run(f"{PATRONICTL} edit-config --force --set synchronous_mode={value}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            roles = {member["Role"] for member in self.members()}
            if ("Sync Standby" in roles) == on:
                return
            time.sleep(1)
        raise BenchError(f"synchronous_mode={value}: the members did not follow within 60 s")

    def preflight(self) -> None:
        members = self.members()
        if len(members) < 2 or not any(m["Role"] == "Leader" for m in members):
            raise BenchError(f"needs a primary and a replica; patronictl list: {members}")
        self.sync_before = self.synchronous_mode()
        # The service's settings, as the app reads them (python-dotenv, no expansion, later
        # files winning: app/core/settings.py): the shared file (where PostgreSQL is), then
        # the service's own (its database, role and password; root and its account only).
        self.db_env = {}
        files = (self.options.env_file, self.options.service_env_file)
        for path in files:
            text = self.app.run(f"cat {shlex.quote(path)}")
            read = dotenv_values(stream=io.StringIO(text), interpolate=False)
            self.db_env.update({key: value for key, value in read.items() if value is not None})
        missing = [key for key in DB_SETTINGS if not self.db_env.get(key)]
        if missing:
            raise BenchError(f"{' and '.join(files)} set no {', '.join(missing)}")

    # -- the app host --------------------------------------------------------------------
    def install(self) -> None:
        """pgbench from the primary, PgBouncer from the distro, the scratch table."""
        pgbench = self.db.run("ls /usr/lib/postgresql/*/bin/pgbench | tail -n 1").strip()
        binary = self.db.run(f"base64 -w0 {pgbench}")
        self.app.run(
            f"install -d -m 0700 {WORK_DIR} && base64 -d > {PGBENCH} && chmod 0755 {PGBENCH}"
            f" && {PGBENCH} --version",
            stdin=binary.encode(),
        )
        self.app.run(
            "dpkg -s libpq5 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive"
            " apt-get install -y -q libpq5 >/dev/null"
        )
        self.app.run(
            "command -v pgbouncer >/dev/null || { DEBIAN_FRONTEND=noninteractive"
            " apt-get install -y -q pgbouncer >/dev/null"
            " && systemctl disable --now pgbouncer.service; }"
        )
        e = self.db_env
        # PgBouncer's user list: each field in double quotes, a double quote inside doubled.
        user, password = (e[key].replace('"', '""') for key in ("APP_DB_USER", "APP_DB_PASS"))
        userlist = f'"{user}" "{password}"\n'
        ini = f"""[databases]
{e["APP_DB_NAME"]} = host={e["APP_DB_HOST"]} port={e["APP_DB_PORT"]} dbname={e["APP_DB_NAME"]}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {PGBOUNCER_PORT}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {WORK_DIR}/userlist.txt
pool_mode = transaction
default_pool_size = {self.options.clients}
max_client_conn = 1000
logfile =
log_connections = 0
log_disconnections = 0
"""
        self.app.run(f"umask 077 && cat > {WORK_DIR}/userlist.txt", stdin=userlist.encode())
        self.app.run(f"umask 077 && cat > {WORK_DIR}/pgbouncer.ini", stdin=ini.encode())
        self.app.run(
            f"chown -R postgres: {WORK_DIR} 2>/dev/null || chown -R nobody: {WORK_DIR}\n"
            f"systemctl stop {PGBOUNCER_UNIT} 2>/dev/null || true\n"
            f"systemd-run --unit={PGBOUNCER_UNIT} --collect --quiet"
            f" --property=User=$(stat -c %U {WORK_DIR})"
            f" /usr/sbin/pgbouncer {WORK_DIR}/pgbouncer.ini\n"
            f"for _ in $(seq 50); do ss -ltn | grep -q ':{PGBOUNCER_PORT} ' && exit 0;"
            " sleep 0.1; done; echo 'PgBouncer did not start' >&2; exit 1"
        )
        self.psql(
            f"CREATE TABLE IF NOT EXISTS {TABLE}"
            " (id bigserial PRIMARY KEY, payload text NOT NULL, at timestamptz DEFAULT now())"
        )

    def connection(self, pgbouncer: bool) -> str:
        e = self.db_env
        host, port = (
            ("127.0.0.1", str(PGBOUNCER_PORT))
            if pgbouncer
            else (
                e["APP_DB_HOST"],
                e["APP_DB_PORT"],
            )
        )
        return (
            f"PGPASSWORD={shlex.quote(e['APP_DB_PASS'])} PGHOST={host} PGPORT={port}"
            f" PGUSER={shlex.quote(e['APP_DB_USER'])} PGDATABASE={shlex.quote(e['APP_DB_NAME'])}"
        )

    def psql(self, sql: str) -> None:
        # pgbench cannot run arbitrary SQL outside a script; a one-transaction script can.
        self.app.run(
            f"printf '%s;\\n' {shlex.quote(sql)} > {WORK_DIR}/once.sql && "
            f"{self.connection(False)} {PGBENCH} -n -t 1 -c 1 -f {WORK_DIR}/once.sql >/dev/null"
        )

    def load(self, config: Config) -> Run:
        clients = self.options.clients
        flags = "-C" if config.per_transaction else ""
        output = self.app.run(
            f"cd {WORK_DIR} && printf %s {shlex.quote(SCRIPT)} > write.sql && rm -f log.* && "
            f"{self.connection(config.pgbouncer)} {PGBENCH} -n {flags} -c {clients}"
            f" -j {min(clients, 2)} -T {self.options.duration:g} -f write.sql -l"
            f" --log-prefix=log 2>&1 && cat log.* | awk '{{print $3}}' | sort -n"
            " > latencies && echo && wc -l < latencies"
            " && awk '{a[NR]=$1} END {print a[int(NR*0.5)+1], a[int(NR*0.99)+1]}' latencies",
        )
        tps = float(re.search(r"tps = ([\d.]+)", output).group(1))  # type: ignore[union-attr]
        done = int(re.search(r"processed: (\d+)", output).group(1))  # type: ignore[union-attr]
        failed_match = re.search(r"number of failed transactions: (\d+)", output)
        failed = int(failed_match.group(1)) if failed_match else 0
        p50_us, p99_us = (float(v) for v in output.strip().splitlines()[-1].split())
        return Run(tps, p50_us / 1000, p99_us / 1000, done, failed)

    def clean_up(self) -> None:
        for step in (
            lambda: self.psql(f"DROP TABLE IF EXISTS {TABLE}"),
            lambda: self.app.run(f"systemctl stop {PGBOUNCER_UNIT} 2>/dev/null; rm -rf {WORK_DIR}"),
            lambda: (
                self.sync_before is not None
                and self.synchronous_mode() != self.sync_before
                and self.set_synchronous_mode(self.sync_before)
            ),
        ):
            try:
                step()
            except BenchError as error:
                print(f"clean-up: {error}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-host", default="10.213.0.63", help="an app host's address")
    parser.add_argument("--db-host", default="10.213.0.61", help="any db host's address")
    parser.add_argument("--user", default="deploy")
    parser.add_argument("--key", type=Path, default=TESTBED_KEY)
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument(
        "--env-file", default="/etc/webstack/app.env", help="the app's shared settings file"
    )
    parser.add_argument(
        "--service-env-file",
        default="/etc/webstack/service-app.env",
        help="the settings file of the service whose database is measured",
    )
    options = parser.parse_args()

    bench = Bench(
        Host(options.app_host, options.user, options.key),
        Host(options.db_host, options.user, options.key),
        options,
    )
    results: dict[str, list[Run]] = {}
    try:
        bench.preflight()
        bench.install()
        print(
            f"app host {options.app_host} -> HAProxy -> primary; {options.clients} clients,"
            f" {options.duration:g} s per run, {options.rounds} round(s), median by tps;"
            f" synchronous_mode was {bench.sync_before}\n"
        )
        for number in range(options.rounds):
            # Asynchronous runs first in even rounds, last in odd ones: one switch per round.
            for config in sorted(CONFIGS, key=lambda c: c.sync != (number % 2 == 1)):
                if bench.synchronous_mode() != config.sync:
                    bench.set_synchronous_mode(config.sync)
                results.setdefault(config.key, []).append(bench.load(config))
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    finally:
        bench.clean_up()

    print(f"  {'':<36} {'tps':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
    median: dict[str, Run] = {}
    for config in sorted(CONFIGS, key=lambda c: c.key != "ak"):
        runs = sorted(results[config.key], key=lambda r: r.tps)
        median[config.key] = chosen = runs[len(runs) // 2]
        print(
            f"  {config.label:<36} {chosen.tps:>8.0f} {chosen.p50_ms:>8.2f}"
            f" {chosen.p99_ms:>8.2f} {sum(r.failed for r in runs):>7}"
        )
    base = median["ak"]
    print(
        f"\nsynchronous replication: p50 {median['sk'].p50_ms - base.p50_ms:+.2f} ms per commit,"
        f" tps x{median['sk'].tps / base.tps:.2f}"
        f"\nPgBouncer, connections kept: tps x{median['akb'].tps / base.tps:.2f},"
        f" p50 {median['akb'].p50_ms - base.p50_ms:+.2f} ms"
        f"\nPgBouncer, a connection per transaction: tps"
        f" x{median['acb'].tps / median['ac'].tps:.2f} against direct per transaction"
        f" (which is x{median['ac'].tps / base.tps:.2f} of kept)"
        f"\n(tps spread over rounds, direct kept: "
        f"{statistics.pstdev(r.tps for r in results['ak']):.0f})"
    )
    failed = sum(r.failed for runs in results.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    run(main)
