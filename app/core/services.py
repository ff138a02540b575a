"""Calls to another service of the stack, over HTTP or a Unix socket, with deadlines.

The address (``APP_USERS_URL``, ``APP_PAYMENTS_URL``) names a server that answers the
public paths (``/users/me``, ``/payments``):

``unix:/run/webstack/payments.sock``
    a service's own Gunicorn socket (the service accepts its public paths), or the single
    app's socket when one process serves every domain and calls itself;
``http://127.0.0.1:8080`` (optionally with a base path)
    the gateway, or any HTTP server in front of the service.

Each worker creates its clients in the lifespan (after the fork). Every call has a connect
timeout and an overall deadline (``APP_SERVICE_CONNECT_TIMEOUT``, ``APP_SERVICE_TIMEOUT``)
and is never retried here: whether a retry is safe is the caller's business (the charge
of an order carries an idempotency key). A failure says whether the request may have
reached the service (:attr:`ServiceUnavailable.maybe_delivered`): a charge that could not
even connect certainly did not happen; one that timed out may have. The calls are traced,
and carry the trace context, when tracing is on.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from opentelemetry.sdk.trace import TracerProvider

from app.core.concurrency import slot_released


class ServiceUnavailable(Exception):
    """The service could not be reached or did not answer in time."""

    def __init__(self, message: str, maybe_delivered: bool) -> None:
        super().__init__(message)
        # False only when no connection was made: the service cannot have acted on it.
        self.maybe_delivered = maybe_delivered


class ServiceClient:
    def __init__(
        self,
        url: str,
        connect_timeout: float,
        timeout: float,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if url.startswith("unix:"):
            transport = httpx.AsyncHTTPTransport(uds=url.removeprefix("unix:"))
            base_url = "http://localhost"
        else:
            transport = httpx.AsyncHTTPTransport()
            base_url = url
        self.url = url
        self.timeout = timeout
        self.client = httpx.AsyncClient(
            transport=transport,
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            # Idle connections are dropped well before Gunicorn's keep-alive ends them.
            limits=httpx.Limits(max_connections=100, keepalive_expiry=5.0),
        )
        if tracer_provider is not None:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor.instrument_client(self.client, tracer_provider=tracer_provider)

    async def request(self, method: str, path: str, *, token: str, **kwargs: Any) -> httpx.Response:
        """``method path`` with the bearer ``token``: the user's own, forwarded, or a
        service credential (app/core/auth.py)."""
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        try:
            async with slot_released():  # not the worker's CPU: let another request work
                with anyio.fail_after(self.timeout):
                    return await self.client.request(method, path, headers=headers, **kwargs)
        except (httpx.TransportError, TimeoutError) as exc:
            not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise ServiceUnavailable(
                f"{method} {self.url}{path}: {type(exc).__name__} {exc}".rstrip(),
                maybe_delivered=not not_sent,
            ) from exc

    async def aclose(self) -> None:
        await self.client.aclose()
