"""What a domain (items, notes, later users, orders, payments) contributes to an app."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Table

from app.core.state import AppState

# Per-worker background work of a domain (the order sweep), entered in the app's lifespan
# once its state (app/core/state.py) exists, left before the resources close.
DomainLifespan = Callable[[AppState], AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class Domain:
    name: str
    # The routes at their public paths (e.g. /orders, /orders/{order_id}).
    router: APIRouter
    # The tables the domain owns: created at start-up when APP_DB_CREATE_SCHEMA is on.
    tables: tuple[Table, ...]
    lifespan: DomainLifespan | None = None


class JSONBytes(JSONResponse):
    """A body that is already JSON: cached bytes go out without being parsed again.

    A JSONResponse subclass so that the OpenAPI schema shows the route's response model.
    """

    def render(self, content: bytes) -> bytes:
        return content
