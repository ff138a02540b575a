"""Amounts of money: exact decimals with two places, bounded, never floats.

A request may send ``29.99`` or ``"29.99"``; more than two decimal places (``1.001``,
``1e-9``), zero, negatives, ``NaN``, infinities and booleans are refused with a 422, and so
is a string in any other notation than plain digits with an optional point (``"1e2"``,
``" 5"``, ``"+5"``). Responses carry amounts as strings (``"59.98"``), so no client parses
them into a binary float. PostgreSQL stores them as ``numeric(14, 2)``.

The OpenAPI schema says exactly that: a number above 0, at most the maximum, a multiple of
0.01 (validators read a JSON number as written, so ``0.57`` is and ``0.5700000000000001``
is not), or a string matching a pattern that spells out the same bounds.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from sqlalchemy import Numeric

CENT = Decimal("0.01")
# One line's unit price, and one charge. With at most 100 lines of at most 1000 units an
# order stays below MAX_AMOUNT, which numeric(14, 2) holds.
MAX_PRICE = Decimal("1000000.00")
MAX_AMOUNT = Decimal("100000000000.00")

MoneyColumn = Numeric(14, 2)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)  # exact: at most two places were accepted


def _string_pattern(maximum: Decimal) -> str:
    """Plain decimal strings above 0, at most ``maximum``, with at most two places."""
    whole = int(maximum)
    return (
        rf"^(?:0*[1-9][0-9]{{0,{len(str(whole)) - 2}}}(?:\.[0-9]{{1,2}})?"  # 1 ... 99...9.99
        rf"|0*{whole}(?:\.0{{1,2}})?"  # the maximum itself
        r"|0*\.(?:0[1-9]|[1-9][0-9]?))$"  # 0.01 ... 0.99
    )


# What pydantic's Decimal would also take from a string but a client should not send:
# exponents, signs, spaces, a bare point, more than two places (even "5.000").
_PLAIN = re.compile(r"(?:[0-9]+(?:\.[0-9]{1,2})?|\.[0-9]{1,2})")


def _plain_string(value: Any, handler: ValidatorFunctionWrapHandler) -> Decimal:
    # Parsed and bounded first, so that "-1", "0.001" or "NaN" get pydantic's own reason.
    parsed: Decimal = handler(value)
    if isinstance(value, str) and not _PLAIN.fullmatch(value):
        raise ValueError('must be digits with an optional point and 2 decimals, like "29.99"')
    return parsed


def _money(maximum: Decimal) -> Any:
    return Annotated[
        Decimal,
        Field(gt=0, le=maximum, decimal_places=2),
        WrapValidator(_plain_string),
        AfterValidator(_cents),
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": float(maximum),
                        "multipleOf": 0.01,
                    },
                    {"type": "string", "pattern": _string_pattern(maximum)},
                ],
                "description": f"Above 0, at most {maximum}, at most 2 decimal places: "
                '29.99 or "29.99"',
            }
        ),
    ]


Price = _money(MAX_PRICE)
Amount = _money(MAX_AMOUNT)
