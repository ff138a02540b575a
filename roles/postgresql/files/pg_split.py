#!/usr/bin/python3
"""Copy one service's tables out of a database it used to share into its own database.

Installed by playbooks/split-databases.yml (as /usr/local/libexec/webstack-pg-split) and
run there as the postgres superuser, once per service whose database is not the shared one:

  webstack-pg-split --from appdb --to user_db --role user_user --table users \
      [--bindir DIR] [--host SOCKETDIR] [--port N]

- Every TABLE must exist in the source database (else: nothing to copy, exit 3; a site
  that never served the domain from the shared database).
- The target database holding none of them: they are copied with pg_dump/pg_restore
  (structure, rows, indexes, constraints, the sequences of their serial columns), owned by
  ROLE, in one transaction; then the rows of each are counted on both sides, and any
  difference fails (exit 1).
- The target holding all of them: already copied, nothing is done; the counts are
  reported (they differ once the service has written to its own database). Unless none
  of them has a row while the source's hold some: the service's migrations made them
  before any copy (site.yml ran first), refused (exit 1), it needs a person.
- The target holding some of them only: refused (exit 1), it needs a person.

The source database is only read, never changed: the operator drops the copied tables
(or the whole database) once the services run on their own. A JSON line on stdout says
what was done: {"action": "copied"|"present"|"absent", "tables": {name: [source, target]}}.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Databases, roles and tables as the roles name them: plain lower-case identifiers only,
# so each goes into SQL and argv as it is.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Failure(Exception):
    pass


class Server:
    def __init__(self, bindir: Path, host: str | None, port: int | None) -> None:
        self.bindir = bindir
        self.connection = (["-h", host] if host else []) + (["-p", str(port)] if port else [])

    def run(self, program: str, *args: str) -> bytes:
        argv = [str(self.bindir / program), *self.connection, *args]
        # PostgreSQL's own programs; names checked against IDENTIFIER by main().
        done = subprocess.run(argv, capture_output=True, check=False)  # noqa: S603
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip()
            raise Failure(f"{program} {' '.join(args[:4])}...: {error}")
        return done.stdout

    def pipe(self, producer: list[str], consumer: list[str]) -> None:
        """Streams one program's output into the other: a dump of any size, no copy held
        in memory or on disk."""
        with tempfile.TemporaryFile() as producer_err, tempfile.TemporaryFile() as consumer_err:
            first = subprocess.Popen(  # noqa: S603
                [str(self.bindir / producer[0]), *self.connection, *producer[1:]],
                stdout=subprocess.PIPE,
                stderr=producer_err,
            )
            second = subprocess.Popen(  # noqa: S603
                [str(self.bindir / consumer[0]), *self.connection, *consumer[1:]],
                stdin=first.stdout,
                stdout=subprocess.DEVNULL,
                stderr=consumer_err,
            )
            assert first.stdout is not None
            first.stdout.close()  # the consumer's end only: the producer sees it exit
            second.wait()
            first.wait()
            errors = []
            for argv, process, stderr in (
                (producer, first, producer_err),
                (consumer, second, consumer_err),
            ):
                if process.returncode != 0:
                    stderr.seek(0)
                    error = stderr.read().decode(errors="replace").strip()
                    errors.append(f"{argv[0]} {' '.join(argv[1:5])}...: {error}")
            if errors:
                raise Failure("; ".join(errors))

    def query(self, database: str, sql: str) -> list[str]:
        out = self.run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql
        )
        return [line for line in out.decode().splitlines() if line]

    def tables(self, database: str, wanted: list[str]) -> set[str]:
        names = ",".join(f"'{name}'" for name in wanted)
        return set(
            self.query(
                database,
                f"SELECT tablename FROM pg_tables WHERE schemaname = 'public' "  # noqa: S608
                f"AND tablename IN ({names})",
            )
        )

    def count(self, database: str, table: str) -> int:
        return int(self.query(database, f'SELECT count(*) FROM public."{table}"')[0])  # noqa: S608


def split(server: Server, source: str, target: str, role: str, tables: list[str]) -> dict:
    for name in (source, target):
        exists = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"  # noqa: S608
        if not server.query("postgres", exists):
            raise Failure(f"database {name} does not exist")
    in_source = server.tables(source, tables)
    in_target = server.tables(target, tables)
    if in_target and in_target != set(tables):
        raise Failure(
            f"{target} holds some of {sorted(tables)} only ({sorted(in_target)}): "
            "refusing to guess; finish or undo that copy by hand"
        )
    if not in_target:
        if not in_source:
            return {"action": "absent", "tables": {}}
        if in_source != set(tables):
            raise Failure(f"{source} holds some of {sorted(tables)} only ({sorted(in_source)})")
        # Consistent: pg_dump reads every table in one snapshot. --role: every object is
        # created by (and so owned by) the service's role; --single-transaction: a failed
        # restore, or a dump cut short, leaves the target as it was.
        server.pipe(
            [
                "pg_dump",
                "--format=custom",
                "--no-owner",
                "--no-acl",
                "-d",
                source,
                *(f"--table=public.{name}" for name in tables),
            ],
            [
                "pg_restore",
                "--no-owner",
                "--no-acl",
                f"--role={role}",
                "--single-transaction",
                "--exit-on-error",
                "-d",
                target,
            ],
        )
        action = "copied"
    else:
        action = "present"
    counts = {
        name: [
            server.count(source, name) if name in in_source else None,
            server.count(target, name),
        ]
        for name in tables
    }
    if action == "copied":
        differ = {name: pair for name, pair in counts.items() if pair[0] != pair[1]}
        if differ:
            raise Failure(f"row counts differ after the copy (source, target): {differ}")
    elif not any(target_rows for _, target_rows in counts.values()) and any(
        source_rows for source_rows, _ in counts.values()
    ):
        raise Failure(
            f"{target} holds {sorted(tables)} without a row while {source} holds their rows "
            f"(source, target): {counts}: not a copy; the service's migrations made them "
            "empty before the split. Stop the service, drop them (with idempotency_keys and "
            "alembic_version) in "
            f"{target} once you are sure they are empty, and run again"
        )
    return {"action": action, "tables": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webstack-pg-split", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="the shared database")
    parser.add_argument("--to", dest="target", required=True, help="the service's database")
    parser.add_argument("--role", required=True, help="the service's role, owner of the copies")
    parser.add_argument("--table", dest="tables", action="append", required=True)
    parser.add_argument("--bindir", type=Path, default=Path("/usr/bin"))
    parser.add_argument("--host", help="server socket directory or address")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    for name in (args.source, args.target, args.role, *args.tables):
        if not IDENTIFIER.match(name):
            parser.error(f"{name!r} is not a plain lower-case identifier")
    try:
        result = split(
            Server(args.bindir, args.host, args.port),
            args.source,
            args.target,
            args.role,
            sorted(set(args.tables)),
        )
    except Failure as exc:
        print(f"webstack-pg-split: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 3 if result["action"] == "absent" else 0


if __name__ == "__main__":
    raise SystemExit(main())
