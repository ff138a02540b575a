"""Types shared by the domains' schemas and routers: ids, pagination, text, timestamps."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, Field, PlainSerializer

# Ids are PostgreSQL `serial` (int4): anything outside this range cannot exist, and
# would make asyncpg fail, so it is refused as bad input before any query.
MAX_ID = 2_147_483_647
# Pages are bounded so one request (and one cached page) stays small.
DEFAULT_LIMIT = 100
MAX_LIMIT = 100
MAX_SKIP = MAX_ID
# Free text (an item's description, a note's content), in characters. Bodies are also
# bounded in bytes (APP_MAX_BODY_BYTES, 64 KiB by default), which holds this much text.
MAX_TEXT_LENGTH = 10_000

IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Object id")]
SkipQuery = Annotated[int, Query(ge=0, le=MAX_SKIP, description="Objects to skip")]
LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, at most {MAX_LIMIT}")
]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; refuse it here instead of failing in the driver.
    # (app/core/body.py refuses NULs and lone surrogates in any body before this; this
    # covers text from elsewhere, such as a query.)
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]

# ISO 8601 with a numeric offset (2026-02-28T12:00:00.123456+00:00), as the seed shows.
Timestamp = Annotated[
    datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json")
]
