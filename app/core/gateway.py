"""Serving one domain alone under the gateway's path prefix (``APP_ROOT_PATH``).

nginx publishes the users service under ``/users/``. The app learns that prefix as the
ASGI ``root_path``, which FastAPI's docs use: ``/users/docs`` loads
``/users/openapi.json``, whose ``servers`` entry sends "Try it out" to ``/users/...``.
Starlette routes a request whose path starts with the root path on the rest of it, and
any other path as it is, so the service answers both forms:

* ``/users/me``, the public path, as nginx passes it on unchanged (``proxy_pass`` without
  a URI) or as the orders service sends it straight to the service's socket;
* ``/me``, as a proxy that strips the prefix passes it on.

The prefix alone (``/users``, a collection) is the service's root, ``/``.

FastAPI's own ``root_path=`` argument did the same and is deprecated in favour of the
server's option; uvicorn's ``--root-path`` however prepends the prefix to every path, which
would refuse the public paths. Hence this small middleware.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class RootPathMiddleware:
    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path
        self._root_path_bytes = root_path.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            # In place, as FastAPI's own argument did: the tracing wrapped around this
            # middleware sees the root path, and the route the router records.
            scope["root_path"] = self.root_path
            if scope["path"] == self.root_path:
                scope["path"] = self.root_path + "/"
                scope["raw_path"] = self._root_path_bytes + b"/"
        await self.app(scope, receive, send)
