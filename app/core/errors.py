"""Errors the domains raise, and the HTTP answers they become."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

logger = logging.getLogger(__name__)


class NotFoundError(Exception):
    """The requested object does not exist (HTTP 404)."""

    def __init__(self, kind: str, object_id: int) -> None:
        super().__init__(f"{kind} {object_id} not found")


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.error("database unavailable: %s: %s", type(exc).__name__, exc)
    return JSONResponse(
        {"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "1"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NotFoundError, _not_found)
    for error in (OperationalError, InterfaceError, PoolTimeoutError, OSError):
        app.add_exception_handler(error, _database_unavailable)
