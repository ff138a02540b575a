"""What a domain (items, notes, later users, orders, payments) contributes to an app."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Table


@dataclass(frozen=True)
class Domain:
    name: str
    router: APIRouter
    # The tables the domain owns: created at start-up when APP_DB_CREATE_SCHEMA is on.
    tables: tuple[Table, ...]


class JSONBytes(JSONResponse):
    """A body that is already JSON: cached bytes go out without being parsed again.

    A JSONResponse subclass so that the OpenAPI schema shows the route's response model.
    """

    def render(self, content: bytes) -> bytes:
        return content
