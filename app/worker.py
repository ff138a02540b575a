"""The Gunicorn worker class: uvicorn-worker's, with a shutdown that drops no request.

uvicorn's graceful shutdown stops accepting and then, in the same step, closes every
connection that has no request in progress. A connection accepted a moment earlier whose
request bytes have arrived but not yet been parsed counts as idle and is closed unanswered;
under a reload (SIGHUP: new workers start, old ones get SIGTERM) nginx sees that as an
upstream error. This worker stops accepting first and gives such connections a short
moment to be parsed, after which uvicorn's shutdown finishes them normally.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as _UvicornWorker

# Long enough for the event loop to read requests that are already in the socket buffers.
ACCEPTED_CONNECTION_GRACE = 0.1


class _DrainingServer(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await asyncio.sleep(ACCEPTED_CONNECTION_GRACE)
        await super().shutdown(sockets=sockets)


class UvicornWorker(_UvicornWorker):
    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
