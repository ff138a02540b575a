#!/usr/bin/env python3
"""Keep writing through the app while the database is failed over, and keep every answer.

Runs on a host that reaches the app (stdlib only), started by the drills as a transient
systemd unit. Each of --clients loops POST /api/items with a name of its own
(<run>-<client>-<seq>) and an Idempotency-Key, one keep-alive connection each, a new
connection after any error, pausing --pause seconds between writes. A write is
acknowledged when it gets a 2xx; everything else (a 503 while there is no primary, a
broken connection) is a failure, and the client goes on with the next name: so every
acknowledged write must be in the database afterwards, whatever happened in between.

On SIGTERM (or after --seconds) it writes --out:
  {"started", "finished", "sent", "acknowledged": [[t, name], ...],
   "failures": [[t, status], ...], "by_status": {...}}
Times are the controller's and the hosts' wall clock (one kernel on the test bed).

  write-load.py --target unix:/run/webstack/app.sock --out /var/tmp/write-load.json
  write-load.py --target 127.0.0.1:8080 ...      (through nginx)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def connect(target: str, timeout: float) -> http.client.HTTPConnection:
    if target.startswith("unix:"):
        return UnixHTTPConnection(target[5:], timeout)
    host, _, port = target.rpartition(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


stop = threading.Event()


def client(number: int, args: argparse.Namespace, record: dict, lock: threading.Lock) -> None:
    conn = connect(args.target, args.timeout)
    seq = 0
    deadline = time.monotonic() + args.seconds
    while not stop.is_set() and time.monotonic() < deadline:
        seq += 1
        name = f"{args.run}-{number}-{seq}"
        body = json.dumps({"name": name})
        headers = {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
        try:
            conn.request("POST", "/api/items", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            status = f"error:{type(exc).__name__}"
            conn.close()
            conn = connect(args.target, args.timeout)
        now = round(time.time(), 3)
        with lock:
            record["sent"] += 1
            record["by_status"][status] += 1
            if status.startswith("2"):
                record["acknowledged"].append([now, name])
            else:
                record["failures"].append([now, status])
        stop.wait(args.pause)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="unix:/run/webstack/app.sock")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=1800)
    parser.add_argument("--timeout", type=float, default=10)
    parser.add_argument("--run", default="drill")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    record: dict = {"sent": 0, "acknowledged": [], "failures": [], "by_status": Counter()}
    lock = threading.Lock()
    started = time.time()
    threads = [
        threading.Thread(target=client, args=(n, args, record, lock)) for n in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record["acknowledged"].sort()
    record["failures"].sort()
    with open(args.out + ".partial", "w") as out:
        json.dump({"started": started, "finished": time.time(), **record}, out)
    # Complete or absent: the drills wait for this name.
    os.replace(args.out + ".partial", args.out)


if __name__ == "__main__":
    main()
