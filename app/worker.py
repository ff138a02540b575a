"""The Gunicorn worker class: uvicorn-worker's, fair under load, with a shutdown that drops
no request.

Fair under load: the standard asyncio loop rather than uvloop, and connections accepted a
batch at a time so that both workers get their share (numbers in docs/benchmarks.md).

Client addresses: uvicorn believes X-Forwarded-For either from everybody or from listed IP
addresses, and a Unix socket peer has none. This worker believes it from the Unix socket
(only nginx's group can connect) and from the proxies named in ``forwarded_allow_ips``
(``APP_FORWARDED_ALLOW_IPS``: the proxies on other hosts, which reach the service over the
private network), and from nobody else.

Shutdown: uvicorn's graceful shutdown stops accepting and then, in the same step, closes every
connection that has no request in progress. A connection accepted a moment earlier whose
request bytes have arrived but not yet been parsed counts as idle and is closed unanswered;
under a reload (SIGHUP: new workers start, old ones get SIGTERM) nginx sees that as an
upstream error. This worker stops accepting first and gives such connections a short
moment to be parsed, after which uvicorn's shutdown finishes them normally.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as _UvicornWorker

# Long enough for the event loop to read requests that are already in the socket buffers.
ACCEPTED_CONNECTION_GRACE = 0.1

# Connections a worker accepts each time its event loop finds the shared socket readable.
# asyncio accepts up to the server's "backlog" at once, and uvicorn passes the listen queue
# (2048): the first worker to wake took a whole burst, 800 of 1000 connections against 200,
# and kept them while the other idled. In small batches a busy worker, whose loop comes
# round less often, accepts less, and the connections spread evenly (500/500: measured
# +35% throughput and p99 halved at 1000 connections, docs/benchmarks.md).
ACCEPT_BATCH = 32


class _SharedListener(socket.socket):
    """A duplicate of the listening socket on which listen() changes nothing.

    asyncio's create_server() calls listen(backlog) with the accept batch, which would
    shrink the kernel's queue (shared by every worker) to 32 and refuse connections that
    nginx then reports as errors; the queue stays as systemd or Gunicorn made it.
    """

    def listen(self, backlog: int = 0, /) -> None:
        return None


def _accepting_copy(sock: socket.socket) -> socket.socket:
    return _SharedListener(fileno=os.dup(sock.fileno()))


class TrustedProxyHeaders:
    """X-Forwarded-For and -Proto applied for Unix socket peers and the listed proxies only."""

    def __init__(self, app: ASGI3Application, trusted: Iterable[str]) -> None:
        self.app = app
        trusted = list(trusted)
        self.anyone = "*" in trusted
        self.networks = [ipaddress.ip_network(t, strict=False) for t in trusted if t != "*"]
        # uvicorn's own middleware, told to believe whoever reaches it through this one.
        self.believed = ProxyHeadersMiddleware(app, trusted_hosts="*")

    def trusts(self, client: Any) -> bool:
        if client is None:  # a Unix socket peer: nginx on this host
            return True
        if self.anyone:
            return True
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "lifespan" and self.trusts(scope.get("client")):
            await self.believed(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _DrainingServer(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await asyncio.sleep(ACCEPTED_CONNECTION_GRACE)
        await super().shutdown(sockets=sockets)


class UvicornWorker(_UvicornWorker):
    # The standard library's event loop, not uvloop. Measured with 1000 connections on two
    # busy workers (docs/benchmarks.md): uvloop left hundreds of connections in the listen
    # queue for seconds (some answered nothing for 12 s, p99 ~6 s) while asyncio accepted
    # every one and shared the workers fairly (p99 = the queue's length, ~1 s), for ~4% less
    # throughput. httptools stays: it parses, it does not schedule.
    # proxy_headers off: TrustedProxyHeaders applies them, for the peers it trusts.
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "asyncio",
        "http": "httptools",
        "proxy_headers": False,
    }

    async def _serve(self) -> None:
        self.config.app = TrustedProxyHeaders(self.wsgi, self.cfg.forwarded_allow_ips)
        self.config.backlog = ACCEPT_BATCH  # only what create_server() accepts at once
        server = _DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=[_accepting_copy(sock) for sock in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
