"""The OpenAPI schema documents the answers every domain shares, not only each route's own.

FastAPI documents what a route declares: its model, the 422 of its parameters and body,
the codes its router lists. What the platform adds to every route is documented here,
once, when the schema is first built:

* 413 on every operation that takes a body (:mod:`app.core.body`), and 422 on every one
  that takes a body or a parameter: a route that reads its body itself (login) or whose
  only parameter is the ``Idempotency-Key`` header gets none from FastAPI;
* 503 with ``Retry-After`` on every operation of a domain: each one reads or writes
  PostgreSQL (:func:`app.core.database.database_unavailable`);
* the body of every error answer declared without one: FastAPI's validation errors for a
  422 (every 422 the platform makes has that shape), ``{"detail": "..."}`` otherwise; and
  the ``WWW-Authenticate`` header of every 401 (:mod:`app.core.auth`);
* the ``Idempotent-Replayed`` header of the 2xx answers of every operation that takes an
  ``Idempotency-Key`` (:mod:`app.core.idempotency`);
* that no string holds a NUL (a ``pattern`` on every string schema without a pattern or
  format of its own), since no body with one is accepted; not in the validation errors,
  which quote what was sent (a field name with a NUL in ``loc``).

``tests/test_openapi_conformance.py`` holds the server to it.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import (
    validation_error_definition,
    validation_error_response_definition,
)

from app.core.idempotency import KEY_HEADER, REPLAYED_HEADER

ERROR_SCHEMA = "ErrorMessage"
VALIDATION_ERRORS = "HTTPValidationError"
# The schemas of error answers that quote the request: no pattern of ours applies there.
QUOTING = frozenset({VALIDATION_ERRORS, "ValidationError"})
NO_NUL_PATTERN = r"^[^\x00]*$"
# The content of a 422 that is either validation errors or a message, for a route's docs.
VALIDATION_ERRORS_OR_MESSAGE: dict[str, Any] = {
    "application/json": {
        "schema": {
            "anyOf": [
                {"$ref": f"#/components/schemas/{VALIDATION_ERRORS}"},
                {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"},
            ]
        }
    }
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _shared_responses(max_body_bytes: int) -> dict[str, dict[Any, dict[str, Any]]]:
    return {
        "body": {
            413: {"description": f"The request body is larger than {max_body_bytes} bytes"},
        },
        "input": {422: {"description": "Validation Error"}},
        "replay": {
            REPLAYED_HEADER: {
                "description": "`true` when this is the stored answer of an earlier request "
                f"with the same {KEY_HEADER}",
                "required": False,
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
        "domain": {
            503: {
                "description": "PostgreSQL (or a service this one calls) cannot serve now",
                "headers": {
                    "Retry-After": {
                        "description": "Seconds to wait before trying again",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                },
            },
        },
    }


def document_shared_responses(
    schema: dict[str, Any], domains: Collection[str], max_body_bytes: int
) -> None:
    """Add the shared answers to ``schema`` (an OpenAPI document, changed in place)."""
    shared = _shared_responses(max_body_bytes)
    for methods in schema.get("paths", {}).values():
        for method in METHODS:
            operation = methods.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                _add(responses, shared["body"])
                _forbid_nul(operation["requestBody"])
            if "requestBody" in operation or operation.get("parameters"):
                _add(responses, shared["input"])
            if set(operation.get("tags", ())) & set(domains):
                _add(responses, shared["domain"])
            keyed = any(p.get("name") == KEY_HEADER for p in operation.get("parameters", ()))
            for code, response in responses.items():
                if str(code)[0] in "45" and "content" not in response:
                    name = VALIDATION_ERRORS if str(code) == "422" else ERROR_SCHEMA
                    reference = {"$ref": f"#/components/schemas/{name}"}
                    response["content"] = {"application/json": {"schema": reference}}
                if keyed and str(code)[0] == "2":
                    response.setdefault("headers", {}).update(shared["replay"])
                if str(code) == "401":
                    response.setdefault("headers", {})["WWW-Authenticate"] = {
                        "description": "Bearer, with the error when a token was sent",
                        "required": True,
                        "schema": {"type": "string"},
                    }
    # Models (stored text holds no NUL either) and bodies; not parameters, which the body
    # check does not see.
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in components.items():
        if name not in QUOTING:
            _forbid_nul(model)
    components[ERROR_SCHEMA] = {
        "title": ERROR_SCHEMA,
        "type": "object",
        "properties": {"detail": {"title": "Detail", "type": "string"}},
        "required": ["detail"],
    }
    # FastAPI defines these only where some route has parameters it validates.
    components.setdefault("ValidationError", copy.deepcopy(validation_error_definition))
    components.setdefault(VALIDATION_ERRORS, copy.deepcopy(validation_error_response_definition))


def _forbid_nul(node: Any) -> None:
    """Give every plain string schema under ``node`` the no-NUL pattern."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(node):
            node["pattern"] = NO_NUL_PATTERN
        for child in node.values():
            _forbid_nul(child)
    elif isinstance(node, list):
        for child in node:
            _forbid_nul(child)


def _add(responses: dict[str, Any], extra: dict[int, dict[str, Any]]) -> None:
    for code, response in extra.items():
        existing = responses.setdefault(str(code), {})
        for key, value in response.items():
            existing.setdefault(key, value)  # what the route says itself comes first


def install(app: FastAPI, domains: Collection[str], max_body_bytes: int) -> None:
    """Document the shared answers in ``app``'s schema, built once on first use."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_shared_responses(build(), domains, max_body_bytes)  # cached by FastAPI
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
