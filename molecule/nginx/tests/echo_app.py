"""Stand-in for the app on its Unix socket: answers every request with the request's headers.

Used by the nginx scenario's checks only (the app is not deployed there). It counts the
connections it accepts, so the checks can see nginx reuse its upstream keepalive connections.
Run as: python3 echo_app.py /run/webstack/app.sock [/run/webstack/users.sock ...] (one
server per socket, each service of the map gets its own).
"""

from __future__ import annotations

import json
import os
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler

CONNECTIONS = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps connections open, as Gunicorn does

    def setup(self) -> None:
        global CONNECTIONS
        CONNECTIONS += 1
        super().setup()

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "connections": CONNECTIONS,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("unix", 0)  # BaseHTTPRequestHandler wants an address pair


def serve(path: str) -> Server:
    if os.path.exists(path):
        os.unlink(path)
    server = Server(path, Handler)
    os.chmod(path, 0o666)  # noqa: S103 - a throwaway socket on a throwaway test host
    return server


def main() -> None:
    servers = [serve(path) for path in sys.argv[1:]]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
