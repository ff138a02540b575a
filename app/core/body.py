"""Request bodies checked before the app parses them: size, nesting, Unicode, numbers.

Measured before this existed: a 100 KB deeply nested JSON body held a worker's event loop
for over a second and ended in a 500; a lone surrogate (``"\\ud800"``) or a non-finite
number (``NaN``, ``Infinity``, ``1e309``) in any field was a 500 (asyncpg cannot encode the
one, the error response cannot render the other); a 0.9 MB description was stored.

:class:`RequestBodyGuard`, a pure ASGI middleware, refuses such bodies for every domain at
once, cheaply, before anything parses them:

* a ``Content-Length`` above ``APP_MAX_BODY_BYTES`` is 413 without a byte read; a body sent
  without one (chunked) is read up to the limit and 413 once it goes past it;
* a JSON body (by its media type) is scanned for its nesting depth: one pass over the
  brackets outside strings that stops at the first level past ``APP_MAX_JSON_DEPTH``
  (422), so a hostile body costs microseconds, not a recursive parse (and no recursive
  error message echoing it back);
* it must be UTF-8 (RFC 8259) and JSON (422 ``json_invalid``, where the app answered 400,
  or accepted UTF-16); it is decoded once with hooks that mark ``NaN``, ``Infinity``,
  numbers that overflow to infinity and integers too long to convert; only when a hook
  fired or the text may hold a surrogate or a NUL (which no PostgreSQL text can store) is
  the result walked, to name the field of each problem (422, in FastAPI's validation error
  shape).

The app then gets the same bytes and parses them as usual: decoding 64 KiB of JSON twice
costs well under a millisecond, and the walk is skipped for every ordinary body.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from starlette import status
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# At most this many problems are named in one answer: a body of ten thousand bad strings
# gets a short refusal, not a long one.
MAX_REPORTED = 20

# A JSON string, escapes included; possessive, so an unterminated one costs one pass.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_OPENERS = frozenset(b"[{")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Where a decoded string may hold a NUL or a surrogate: the escape \u0000, an escape
# \uD800 ... \uDFFF (half of a pair, which the decoder joins, or a lone one) or a
# surrogate encoded in the bytes themselves. (JSON allows no raw control characters.)
_SUSPECT = re.compile(r"\\u0000|\\u[dD][89a-fA-F][0-9a-fA-F]{2}|[\ud800-\udfff]")


class _BadNumber:
    """What the decoder puts where a number has no finite value we could store."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


_NON_FINITE = _BadNumber("Input should be a finite number")
_TOO_LONG = _BadNumber(
    f"Input should be an integer of at most {sys.get_int_max_str_digits()} digits"
)


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this media type as JSON (or could, given none).

    A superset of FastAPI's rule (``application/json`` and ``application/*+json``), so that
    no body it parses escapes the checks.
    """
    return content_type is None or "json" in content_type.lower()


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep (strings do not count)."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    depth = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _clean(text: str) -> str:
    # An error message must be encodable itself: surrogates shown as U+FFFD.
    return _SURROGATE.sub("\ufffd", text)


def _text_problem(text: str, loc: tuple[str | int, ...], found: list[dict[str, Any]]) -> None:
    if len(found) >= MAX_REPORTED:
        return
    if _SURROGATE.search(text):
        found.append(
            {
                "type": "string_unicode",
                "loc": list(loc),
                "msg": "Input should be valid Unicode text, without lone surrogates",
            }
        )
    elif "\x00" in text:  # PostgreSQL stores no U+0000 in text, nor in jsonb
        found.append(
            {
                "type": "string_nul",
                "loc": list(loc),
                "msg": "Input should not contain NUL characters",
            }
        )


def _problems(value: Any, loc: tuple[str | int, ...], found: list[dict[str, Any]]) -> None:
    """Append an error for every lone surrogate, NUL and bad number in ``value`` (recursion is
    bounded: the depth was checked first)."""
    if len(found) >= MAX_REPORTED:
        return
    if isinstance(value, str):
        _text_problem(value, loc, found)
    elif isinstance(value, _BadNumber):
        found.append({"type": "finite_number", "loc": list(loc), "msg": value.message})
    elif isinstance(value, dict):
        for key, child in value.items():
            here = (*loc, _clean(key))
            _text_problem(key, here, found)  # a field name is text too
            _problems(child, here, found)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _problems(child, (*loc, index), found)


def json_errors(body: bytes, max_depth: int) -> list[dict[str, Any]]:
    """What is wrong with a JSON request body, as FastAPI's validation errors; [] if fine."""
    if json_too_deep(body, max_depth):
        return [
            {
                "type": "json_too_deep",
                "loc": ["body"],
                "msg": f"JSON should nest arrays and objects at most {max_depth} levels deep",
                "ctx": {"max_depth": max_depth},
            }
        ]
    try:
        # Encoded surrogates pass here (as they pass the app's own decoding) to be named
        # with their field below; anything else that is not UTF-8 is refused now.
        text = body.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError as exc:
        return [_invalid(exc.start, f"invalid UTF-8 at byte {exc.start}")]
    bad_numbers = False

    def finite_float(literal: str) -> float | _BadNumber:
        nonlocal bad_numbers
        number = float(literal)  # 1e309 is inf
        if math.isfinite(number):
            return number
        bad_numbers = True
        return _NON_FINITE

    def bounded_int(literal: str) -> int | _BadNumber:
        nonlocal bad_numbers
        try:
            return int(literal)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            bad_numbers = True
            return _TOO_LONG

    def constant(name: str) -> _BadNumber:  # NaN, Infinity, -Infinity
        nonlocal bad_numbers
        bad_numbers = True
        return _NON_FINITE

    try:
        value = json.loads(
            text, parse_float=finite_float, parse_int=bounded_int, parse_constant=constant
        )
    except json.JSONDecodeError as exc:
        return [_invalid(exc.pos, exc.msg)]
    if not bad_numbers and not _SUSPECT.search(text):
        return []
    found: list[dict[str, Any]] = []
    _problems(value, ("body",), found)
    return found


def _invalid(position: int, reason: str) -> dict[str, Any]:
    # The shape FastAPI gives a body it cannot decode.
    return {
        "type": "json_invalid",
        "loc": ["body", position],
        "msg": "JSON decode error",
        "ctx": {"error": reason},
    }


class RequestBodyGuard:
    """Reads request bodies up to ``max_bytes`` and checks JSON ones before the app sees them.

    A body is read and checked here, ahead of the route and of the concurrency limit (an
    upload, slow or hostile, holds no slot). The refusal is raised when the route asks for
    the body, as an :class:`HTTPException` (413, or 422 with FastAPI's validation error
    list): so the router has chosen the route, and metrics and traces name it; and only a
    route that takes a body refuses one, as the OpenAPI schema documents.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (GET, DELETE, ...)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.app(scope, _body_then(self._too_large(), receive), send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self.app(scope, _body_then(self._too_large(), receive), send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and is_json(headers.get("content-type")):
            errors = json_errors(body, self.max_depth)
            if errors:
                refused = HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=errors)
                await self.app(scope, _body_then(refused, receive), send)
                return
        body_message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _body_then(body_message, receive), send)

    def _too_large(self) -> HTTPException:
        return HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"request body larger than {self.max_bytes} bytes",
            # The rest of the body is never read: the server closes the connection after this.
            headers={"Connection": "close"},
        )


def _body_then(first: Message | HTTPException, receive: Receive) -> Receive:
    """A ``receive`` whose first call hands the app the body already read, or raises its
    refusal, and whose later calls wait on the connection (for a disconnect)."""
    given = False

    async def body_then_connection() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        if isinstance(first, HTTPException):
            raise first
        return first

    return body_then_connection
