"""Whether an OpenAPI schema says what its server does: the checks schemathesis runs for
every operation of a service, shared by the in-process run (tests/test_openapi_conformance.py)
and the run through nginx on a deployed host (molecule/tests/test_openapi_gateway.py).

For each operation, schemathesis generates requests from the schema, valid ones and
invalid ones, and checks each answer: no 5xx but a documented 503, a documented status
code, content type and headers, a body matching the documented schema, invalid requests
refused and valid ones not. A write sent with an Idempotency-Key is sent twice and must be
replayed. A failure names the operation, the check and an example. KNOWN_GAPS lists what a
schema cannot express, with the reason.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.core.idempotency import KEY_HEADER, REPLAYED_HEADER, WRITE_METHODS

# Examples per operation and mode: enough to meet every documented status, few enough
# that the whole run stays around half a minute.
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]
# (operation, check) -> why the server may differ from what the schema alone says.
# The checks still run that would see a 500 (status_code_conformance: it is undocumented).
KNOWN_GAPS: dict[tuple[str, Callable[..., Any]], str] = {
    ("POST /users/register", positive_data_acceptance): (
        "the password rule (two kinds of characters, not the username or e-mail address) "
        "is beyond what JSON Schema expresses"
    ),
    ("POST /orders", positive_data_acceptance): (
        "a total_amount sent must equal the sum of the lines, which JSON Schema cannot "
        "compute; and a quantity is strictly an integer: 2.0 is refused, which JSON Schema "
        "counts as one"
    ),
    ("POST /payments", positive_data_acceptance): (
        "the amount and currency must be those of an existing order of the caller's: the "
        "order, not the request, decides"
    ),
    ("POST /payments/{payment_id}/refund", positive_data_acceptance): (
        "refunding a payment that is not completed is a documented 400: the payment's "
        "state, not the request, is what is wrong"
    ),
}


@dataclasses.dataclass
class Finding:
    operation: str
    mode: str
    check: str
    example: str


def fresh_key(case: Any) -> None:
    """A new Idempotency-Key for a case that sends one: generated keys repeat across
    cases, and a key reused with another request is rightly a 422, which the schema cannot
    say. (Cases whose invalid part is the header keep theirs.)"""
    for name in list(case.headers or ()):
        if name.lower() == KEY_HEADER.lower():
            case.headers[name] = uuid.uuid4().hex


def stored(case: Any, response: Any) -> bool:
    """Whether the server keeps this answer for a retry with the case's key: a 2xx to a
    write, unless it is a pending order (a retry resumes it instead)."""
    sent = {name.lower() for name in case.headers or ()}
    if case.method.upper() not in WRITE_METHODS or KEY_HEADER.lower() not in sent:
        return False
    if not 200 <= response.status_code < 300:
        return False
    try:
        return bool(response.json().get("status") != "pending")
    except (ValueError, AttributeError):  # no body (204), or not an object
        return True


def run_operation(
    operation: Any, mode: GenerationMode, headers: dict[str, str], findings: list[Finding]
) -> None:
    checks = [c for c in CHECKS if (operation.label, c) not in KNOWN_GAPS]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,  # nothing written into the repository
        derandomize=True,  # the same examples on every run: CI is repeatable
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        # A valid token, unless the headers are what this case makes invalid.
        negated = {
            location
            for location, info in (case.meta.components.items() if case.meta else ())
            if info.mode == GenerationMode.NEGATIVE
        }
        extra = None if ParameterLocation.HEADER in negated else headers
        if ParameterLocation.HEADER not in negated:
            fresh_key(case)
        try:
            response = case.call_and_validate(checks=checks, headers=extra)
            if mode == GenerationMode.POSITIVE and stored(case, response):
                # The same request again: the first answer, replayed, and as documented.
                again = case.call_and_validate(checks=checks, headers=extra)
                assert again.headers.get(REPLAYED_HEADER.lower()) == ["true"], "not replayed"
                assert (again.status_code, again.content) == (
                    response.status_code,
                    response.content,
                ), "replayed another answer"
        except (Exception, BaseExceptionGroup) as failure:
            found = failure.exceptions if isinstance(failure, BaseExceptionGroup) else [failure]
            for each in found:
                title = str(each).splitlines()[0] if str(each) else type(each).__name__
                findings.append(Finding(operation.label, mode.value, title, str(failure)))

    try:
        check()
    except Unsatisfiable:
        pass  # nothing invalid to send (GET /health takes no input)


def check_schema(schema: Any, headers: dict[str, str]) -> tuple[list[Any], list[Finding]]:
    """Every operation of ``schema`` in both modes; the operations and what disagreed."""
    findings: list[Finding] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, mode, headers, findings)
    return operations, findings


def report(findings: list[Finding]) -> str:
    """What disagreed, once per operation, mode and check, then one example of each."""
    summary = sorted({(f.operation, f.mode, f.check) for f in findings})
    examples = {(f.operation, f.mode, f.check): f.example for f in findings}
    lines = ["the schema and the server disagree:", *map(str, summary), "", "examples:"]
    return "\n".join([*lines, *examples.values()])
