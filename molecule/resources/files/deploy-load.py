#!/usr/bin/env python3
"""Keep steady traffic on the stack while a deploy runs, and count every failure.

Runs on the test host (stdlib only), started by the side_effect playbook as a transient
systemd unit before it re-deploys, so the requests cross the deploy exactly as a client's
would. Each of --clients keeps one HTTP/1.1 keep-alive connection to --target and loops
GET /health, GET /api/items, POST /api/items, GET /api/items/{id} and each --get path in
turn until it gets SIGTERM
(the playbook stops it once the deploys are done), --seconds pass or --max-requests are
sent. A request fails if it gets no complete response or a 5xx.
Results go to --out as JSON.

With --rate, the clients together send about that many requests a second, each starting
its requests at an even pace (a late one starts at once, with no burst to catch up):
steady traffic that leaves the test bed's cores to the deploy it watches. Without it, each
client sends its next request as soon as the answer is in.

Like any HTTP/1.1 client (RFC 9112, 9.3.1), it sends a request again, once, on a new
connection when a kept-alive connection was closed before any byte of the answer came
back: a server may close an idle connection (nginx does on every reload) just as the next
request leaves, and such a request was never read. These are counted apart ("resent"), not
as failures. Every POST carries an Idempotency-Key, the same when it is resent.

  deploy-load.py --target 127.0.0.1:8080 --seconds 60 --out /var/tmp/deploy-load.json
  deploy-load.py --target unix:/run/webstack/app.sock ...
  deploy-load.py ... --get /users/openapi.json --get /orders/openapi.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import threading
import time
import uuid
from collections import Counter

# What a closed kept-alive connection looks like when no answer had started.
CLOSED_UNANSWERED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


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


def client(
    args: argparse.Namespace,
    deadline: float,
    stats: Counter,
    lock: threading.Lock,
    budget: list[int],
) -> None:
    conn = connect(args.target, args.timeout)
    answered = 0  # answers on the current connection: a closed fresh one is never resent
    item_id = None
    step = 0
    interval = args.clients / args.rate if args.rate > 0 else 0.0
    next_start = time.monotonic()
    while time.monotonic() < deadline and not stop.is_set():
        if interval:
            now = time.monotonic()
            if next_start > now and stop.wait(next_start - now):
                break
            next_start = max(next_start, now) + interval
        with lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        step += 1
        turn = step % (4 + len(args.get))
        if turn == 0:
            method, path, body = "POST", "/api/items", json.dumps({"name": f"deploy-{step}"})
        elif turn == 1 and item_id is not None:
            method, path, body = "GET", f"/api/items/{item_id}", None
        elif turn == 2:
            method, path, body = "GET", "/api/items?limit=5", None
        elif turn >= 4:
            method, path, body = "GET", args.get[turn - 4], None
        else:
            method, path, body = "GET", "/health", None
        headers = (
            {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
            if body
            else {}
        )
        for attempt in (1, 2):
            answer_started = False
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                answer_started = True
                payload = response.read()
                status = response.status
                answered += 1
                if method == "POST" and status == 201:
                    item_id = json.loads(payload)["id"]
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    answered = 0
                break
            except (OSError, http.client.HTTPException) as exc:
                status = f"error:{type(exc).__name__}"
                reused = answered > 0
                conn.close()
                conn = connect(args.target, args.timeout)
                answered = 0
                unanswered = not answer_started and isinstance(exc, CLOSED_UNANSWERED)
                if attempt == 1 and reused and unanswered:
                    with lock:
                        stats_resent.append(
                            {"t": round(time.time(), 3), "req": f"{method} {path}", "error": status}
                        )
                    continue
                break
        with lock:
            stats[str(status)] += 1
            if str(status).startswith(("5", "error")):
                stats_failures.append(
                    {"t": round(time.time(), 3), "req": f"{method} {path}", "status": str(status)}
                )


stats_failures: list[dict[str, object]] = []
stats_resent: list[dict[str, object]] = []
stop = threading.Event()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:8080")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument(
        "--rate", type=float, default=0, help="requests a second, all clients together"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--get", action="append", default=[], help="another path to GET")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    stats: Counter = Counter()
    lock = threading.Lock()
    budget = [args.max_requests]
    started = time.time()
    deadline = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=client, args=(args, deadline, stats, lock, budget))
        for _ in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(stats.values())
    failures = sum(n for s, n in stats.items() if s.startswith(("5", "error")))
    result = {
        "started": started,
        "finished": time.time(),
        "requests": total,
        "rate": args.rate or None,
        "failures": failures,
        "by_status": dict(stats),
        "first_failures": stats_failures[:20],
        "resent": len(stats_resent),
        "first_resent": stats_resent[:20],
    }
    with open(args.out, "w") as out:
        json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
