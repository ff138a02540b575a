#!/usr/bin/python3
"""Check a PostgreSQL configuration file before it replaces the live one.

Installed by the webstack postgresql role, which runs it as the `validate:` command of the
files it writes: a file PostgreSQL would reject never replaces the live one, so a running
server keeps its configuration and a restart never meets a broken file.

  webstack-pg-check settings --bindir DIR --datadir DIR --config FILE [--name NAME] [CANDIDATE]
      A throwaway `postgres -C` (it starts nothing and may run beside the live server)
      parses FILE, the live postgresql.conf with everything it includes, then CANDIDATE on
      top: an unknown parameter or an invalid value fails, naming it. Without CANDIDATE,
      the live files alone are checked (before a restart).
  webstack-pg-check hba --port N --live FILE [--name NAME] CANDIDATE
      The running server parses CANDIDATE: it stands in place of FILE for the moment of one
      query of pg_hba_file_rules (which reads the file named by hba_file at query time, and
      changes nothing live), then FILE is put back, whatever the answer.

Exit 0 when PostgreSQL accepts the file, 1 with the reasons on stderr when it does not.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OWNER = "postgres"
# What PostgreSQL logs about a file it rejects, without the log line prefix.
MESSAGE = re.compile(r"\b(?:LOG|WARNING|ERROR|FATAL|DETAIL|HINT):\s+(.*)$")


def as_owner(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as the cluster owner, as the server itself runs."""
    owner = pwd.getpwnam(OWNER)
    return subprocess.run(  # noqa: S603 (fixed programs; arguments from the role)
        argv,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        user=owner.pw_uid,
        group=owner.pw_gid,
        extra_groups=[],
    )


def give_owner(*paths: Path) -> None:
    """Let the cluster owner read what the check needs (Ansible's temporary file is root's)."""
    owner = pwd.getpwnam(OWNER)
    for path in paths:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def messages(output: str, replace: dict[str, str]) -> list[str]:
    found = []
    for line in output.splitlines():
        match = MESSAGE.search(line)
        text = match.group(1) if match else line.strip()
        for old, new in replace.items():
            text = text.replace(old, new)
        if text and text not in found:
            found.append(text)
    return found


def check_settings(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="webstack-pg-check-") as tmp:
        workdir = Path(tmp)
        main = workdir / "postgresql.conf"
        lines = [f"include '{args.config}'"]
        replace = {}
        if args.candidate:
            candidate = workdir / "candidate.conf"
            shutil.copyfile(args.candidate, candidate)
            give_owner(candidate)
            lines.append(f"include '{candidate}'")
            replace[str(candidate)] = args.name or args.candidate
        main.write_text("\n".join(lines) + "\n")
        give_owner(workdir, main)
        replace[str(main)] = args.config
        postgres = f"{args.bindir}/postgres"
        config = f"config_file={main}"
        proc = as_owner([postgres, "-D", args.datadir, "-C", "data_directory", "-c", config], tmp)
    if proc.returncode == 0:
        return []
    return messages(proc.stderr, replace) or [f"postgres -C exited {proc.returncode}"]


def check_hba(args: argparse.Namespace) -> list[str]:
    live = Path(args.live)
    query = (
        "SELECT 'line ' || line_number || ': ' || error FROM pg_hba_file_rules"
        " WHERE error IS NOT NULL ORDER BY line_number"
    )
    psql = ["psql", "-XAtq", "-p", str(args.port), "-d", "postgres", "-c"]
    if as_owner([*psql, "SELECT 1"]).returncode:
        # Nothing is running that could keep an old configuration; the file's first reader
        # is the next start, which reports a bad line itself.
        print(f"{live}: PostgreSQL is not running here; not checked", file=sys.stderr)
        return []
    stat = live.stat()
    saved = live.with_name(live.name + ".webstack-saved")
    trial = live.with_name(live.name + ".webstack-trial")
    # The live file itself (its inode, owner and mode) is kept aside and put back.
    saved.unlink(missing_ok=True)
    os.link(live, saved)
    shutil.copyfile(args.candidate, trial)
    os.chown(trial, stat.st_uid, stat.st_gid)
    trial.chmod(stat.st_mode & 0o7777)
    try:
        os.replace(trial, live)
        proc = as_owner([*psql, query])
    finally:
        os.replace(saved, live)
    if proc.returncode != 0:
        return messages(proc.stderr, {}) or [f"psql exited {proc.returncode}"]
    name = args.name or str(live)
    return [f"{name} {line}" for line in proc.stdout.splitlines() if line]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    settings = modes.add_parser("settings")
    settings.add_argument("--bindir", required=True)
    settings.add_argument("--datadir", required=True)
    settings.add_argument("--config", required=True, help="the live postgresql.conf")
    settings.add_argument("--name", help="what to call the candidate in messages")
    settings.add_argument("candidate", nargs="?")
    hba = modes.add_parser("hba")
    hba.add_argument("--port", type=int, default=5432)
    hba.add_argument("--live", required=True, help="the live pg_hba.conf")
    hba.add_argument("--name", help="what to call the candidate in messages")
    hba.add_argument("candidate")
    args = parser.parse_args(argv)
    problems = check_settings(args) if args.mode == "settings" else check_hba(args)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
