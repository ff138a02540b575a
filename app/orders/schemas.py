"""Request and response bodies of /orders.

The client sends lines only. The total is the server's sum of quantity x price; a body
carrying a ``total`` (or any other unknown field) is refused with a 422 rather than
ignored, so a client that believes it sets the total learns at once that it does not.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.core.money import Price
from app.core.schemas import Name, Timestamp

MAX_LINES = 100
MAX_QUANTITY = 1000

# Strict: 2.0, "2" and true are not quantities.
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]


class OrderStatus(StrEnum):
    PENDING = "pending"  # recorded, the charge has not been answered yet
    CONFIRMED = "confirmed"  # paid
    FAILED = "failed"  # declined, or the payment service could not be reached


class OrderLineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    quantity: Quantity
    price: Price


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[OrderLineCreate], Field(min_length=1, max_length=MAX_LINES)]


class OrderLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    quantity: int
    price: Decimal
    line_total: Decimal


class OrderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    status: OrderStatus
    total: Decimal
    payment_id: int | None
    failure_reason: str | None
    items: list[OrderLineRead]
    created_at: Timestamp
    updated_at: Timestamp
