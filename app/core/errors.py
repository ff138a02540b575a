"""Errors the domains raise, and the HTTP answers they become.

Services raise the errors below and nothing of HTTP; :func:`install_error_handlers` is the
one place that turns each into its status, body (``{"detail": <message>}``) and headers:

==========================  ======  ==================================================
error                       status  headers
==========================  ======  ==================================================
:class:`NotFoundError`      404
:class:`ConflictError`      409
:class:`InvalidStateError`  400
:class:`MismatchError`      422
:class:`UnauthorizedError`  401     ``WWW-Authenticate: Bearer`` (with ``error=``)
:class:`TooManyAttempts`    429     ``Retry-After``
:class:`UnavailableError`   503     ``Retry-After: 1`` (a service this one calls)
==========================  ======  ==================================================

Database errors are sorted in one place (:func:`app.core.database.database_unavailable`):
PostgreSQL out of reach or unable to serve now is 503 with ``Retry-After``, logged as a
warning at most every few seconds however many requests it fails; anything else (a
constraint violation nobody expected, a bad statement) is a bug: 500, logged with its
traceback. Neither answer says more than that, and SQL parameters are never logged.
"""

from __future__ import annotations

import logging
import math
import time

from asyncpg.exceptions import InterfaceError as DriverInterfaceError
from asyncpg.exceptions import PostgresError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.core.database import database_unavailable

logger = logging.getLogger(__name__)

# Seconds between two "database unavailable" warnings of one worker.
UNAVAILABLE_LOG_INTERVAL = 10.0
RETRY_AFTER_SECONDS = 1


class DomainError(Exception):
    """Something a service refuses or cannot do; its message is the answer's detail."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(DomainError):
    """The requested object does not exist, or is not the caller's."""

    def __init__(self, kind: str, object_id: int) -> None:
        super().__init__(f"{kind} {object_id} not found")


class ConflictError(DomainError):
    """Taken already (a name), or at odds with what exists (another payment of an order)."""


class InvalidStateError(DomainError):
    """Not possible in the object's current state (refunding a payment not completed)."""


class MismatchError(DomainError):
    """The request contradicts the data it refers to (an amount that is not the order's)."""


class UnauthorizedError(DomainError):
    """No valid credential; ``error`` is the RFC 6750 error code of the challenge."""

    def __init__(self, detail: str, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.error = error


class TooManyAttempts(DomainError):
    """Refused for now; may be tried again after ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class UnavailableError(DomainError):
    """A service this one depends on cannot answer now (an unchecked answer is no answer)."""


SERVICE_RETRY_AFTER_SECONDS = 1
STATUS: dict[type[DomainError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    InvalidStateError: 400,
    MismatchError: 422,
    UnauthorizedError: 401,
    TooManyAttempts: 429,
    UnavailableError: 503,
}


def _headers(exc: DomainError) -> dict[str, str] | None:
    if isinstance(exc, UnauthorizedError):
        return {
            "WWW-Authenticate": "Bearer" if exc.error is None else f'Bearer error="{exc.error}"'
        }
    if isinstance(exc, TooManyAttempts):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, UnavailableError):
        return {"Retry-After": str(SERVICE_RETRY_AFTER_SECONDS)}
    return None


def http_status(exc: DomainError) -> int:
    """The status of the nearest class of ``exc`` in :data:`STATUS` (500 for none)."""
    return next((STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS), 500)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return JSONResponse({"detail": exc.detail}, status_code=http_status(exc), headers=_headers(exc))


class ThrottledWarning:
    """One warning per ``interval`` seconds at most; the next says how many were held back."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = -math.inf
        self.held_back = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self.held_back += 1
            return
        if self.held_back:
            message += " (%d more since the last warning)"
            args = (*args, self.held_back)
        self._last = now
        self.held_back = 0
        logger.warning(message, *args)


def _root_cause(exc: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrappers: its text names the problem
    without the statement."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException) or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def install_error_handlers(app: FastAPI) -> None:
    unavailable_warning = ThrottledWarning(UNAVAILABLE_LOG_INTERVAL)

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):
            cause = _root_cause(exc)
            detail = " ".join(str(cause).split())[:200]  # one line (asyncpg adds DETAIL: ...)
            unavailable_warning.warn("database unavailable: %s: %s", type(cause).__name__, detail)
            return JSONResponse(
                {"detail": "database unavailable"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        logger.error(
            "unexpected database error in %s %s", request.method, request.url.path, exc_info=exc
        )
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    app.add_exception_handler(DomainError, _domain_error)
    # Everything the database layer raises: SQLAlchemy's errors (its pool's timeout too),
    # asyncpg's own where they pass unwrapped (connecting), and the socket's.
    for error in (SQLAlchemyError, PostgresError, DriverInterfaceError, OSError):
        app.add_exception_handler(error, database_error)
