"""Errors the domains raise, and the HTTP answers they become.

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


class NotFoundError(Exception):
    """The requested object does not exist (HTTP 404)."""

    def __init__(self, kind: str, object_id: int) -> None:
        super().__init__(f"{kind} {object_id} not found")


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


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

    app.add_exception_handler(NotFoundError, _not_found)
    # Everything the database layer raises: SQLAlchemy's errors (its pool's timeout too),
    # asyncpg's own where they pass unwrapped (connecting), and the socket's.
    for error in (SQLAlchemyError, PostgresError, DriverInterfaceError, OSError):
        app.add_exception_handler(error, database_error)
