"""Amounts of money: exact decimals with two places, bounded, never floats.

A request may send ``29.99`` or ``"29.99"``; more than two decimal places (``1.001``,
``1e-9``), zero, negatives, ``NaN``, infinities and booleans are refused with a 422.
Responses carry amounts as strings (``"59.98"``), so no client parses them into a binary
float. PostgreSQL stores them as ``numeric(14, 2)``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field
from sqlalchemy import Numeric

CENT = Decimal("0.01")
# One line's unit price, and one charge. With at most 100 lines of at most 1000 units an
# order stays below MAX_AMOUNT, which numeric(14, 2) holds.
MAX_PRICE = Decimal("1000000.00")
MAX_AMOUNT = Decimal("100000000000.00")

MoneyColumn = Numeric(14, 2)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)  # exact: at most two places were accepted


Price = Annotated[
    Decimal,
    Field(gt=0, le=MAX_PRICE, decimal_places=2, description="At most 2 decimal places"),
    AfterValidator(_cents),
]
Amount = Annotated[
    Decimal,
    Field(gt=0, le=MAX_AMOUNT, decimal_places=2, description="At most 2 decimal places"),
    AfterValidator(_cents),
]
