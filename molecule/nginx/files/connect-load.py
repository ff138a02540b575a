#!/usr/bin/env python3
"""Open new connections to nginx and count every one that fails.

Runs on the test host (stdlib only) as a transient unit while the side effect upgrades
nginx, so a refused connection during the switch from one master to the next is counted,
not missed. Each of --clients threads loops: connect (a new TCP connection each time, the
way the issue's figure of 241 refused connections was measured), optionally TLS, send
``GET --path`` with ``Connection: close``, read the whole answer. --rate paces the clients
together (connections a second, evenly spaced; a late one goes at once, without a burst to
catch up); 0 sends without pause. Until SIGTERM, or --seconds. The tally goes to --out as
JSON:

  {"requests": N, "ok": N, "refused": N, "reset": N, "timeout": N, "other": N,
   "statuses": {"200": N}, "by_target": {...}, "first_errors": [...]}

A request counts as ok when a complete answer with a 2xx status came back.

  connect-load.py --target 127.0.0.1:8080 --target tls:127.0.0.1:443 --out /var/tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections import Counter

STOP = threading.Event()


def one_request(target: str, path: str, timeout: float, source: str) -> tuple[str, int]:
    """('ok' | 'http' | 'refused' | 'reset' | 'timeout' | 'other', status)."""
    tls = target.startswith("tls:")
    host, _, port = target.removeprefix("tls:").rpartition(":")
    try:
        raw = socket.create_connection(
            (host, int(port)), timeout=timeout, source_address=(source, 0) if source else None
        )
    except ConnectionRefusedError:
        return "refused", 0
    except TimeoutError:
        return "timeout", 0
    except OSError:
        return "other", 0
    try:
        conn = raw
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = context.wrap_socket(raw, server_hostname="localhost")
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
        answer = b"".join(chunks)
        head, sep, body = answer.partition(b"\r\n\r\n")
        if not sep:
            return "reset", 0
        status = int(head.split(b" ", 2)[1])
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")[1:]
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        if length is not None and len(body) != length:
            return "reset", status
        return ("ok" if 200 <= status < 300 else "http"), status
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return "reset", 0
    except TimeoutError:
        return "timeout", 0
    except (OSError, ValueError, IndexError):
        return "other", 0
    finally:
        raw.close()


class Pacer:
    """The clients' shared schedule: one start every 1/rate seconds (rate 0: no pause)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate if rate > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            # Behind by more than one interval (a slow answer): start from now, no burst.
            self.next = max(self.next + self.interval, now)
            slot = self.next
        STOP.wait(max(0.0, slot - now))


def client(
    targets: list[str],
    path: str,
    timeout: float,
    source: str,
    deadline: float,
    pacer: Pacer,
    tally: dict,
) -> None:
    index = 0
    while not STOP.is_set() and time.monotonic() < deadline:
        pacer.wait()
        if STOP.is_set():
            break
        target = targets[index % len(targets)]
        index += 1
        outcome, status = one_request(target, path, timeout, source)
        with tally["lock"]:
            tally["counts"][outcome] += 1
            tally["by_target"][target][outcome] += 1
            if status:
                tally["statuses"][str(status)] += 1
            if outcome != "ok" and len(tally["first_errors"]) < 20:
                tally["first_errors"].append(
                    {
                        "at": round(time.time(), 3),
                        "target": target,
                        "outcome": outcome,
                        "status": status,
                    }
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        action="append",
        required=True,
        help="HOST:PORT, or tls:HOST:PORT (repeat to alternate)",
    )
    parser.add_argument("--path", default="/")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--rate", type=float, default=0, help="connections a second, all clients (0: no pause)"
    )
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--timeout", type=float, default=10)
    parser.add_argument("--source", default="", help="local address to connect from")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    tally = {
        "lock": threading.Lock(),
        "counts": Counter(),
        "statuses": Counter(),
        "by_target": {t: Counter() for t in args.target},
        "first_errors": [],
    }
    started = time.monotonic()
    deadline = started + args.seconds
    pacer = Pacer(args.rate)
    threads = [
        threading.Thread(
            target=client,
            args=(args.target, args.path, args.timeout, args.source, deadline, pacer, tally),
        )
        for _ in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = tally["counts"]
    result = {
        "seconds": round(time.monotonic() - started, 1),
        "requests": sum(counts.values()),
        **{k: counts.get(k, 0) for k in ("ok", "http", "refused", "reset", "timeout", "other")},
        "statuses": dict(tally["statuses"]),
        "by_target": {t: dict(c) for t, c in tally["by_target"].items()},
        "first_errors": tally["first_errors"],
    }
    with open(args.out + ".tmp", "w") as out:
        json.dump(result, out, indent=1)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
