"""Request and response bodies of /payments."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.core.charges import DEFAULT_CURRENCY, DEFAULT_PAYMENT_METHOD, Currency, PaymentMethod
from app.core.money import Amount
from app.core.schemas import MAX_ID, Timestamp

OrderId = Annotated[int, Field(ge=1, le=MAX_ID)]


class PaymentStatus(StrEnum):
    PENDING = "pending"  # recorded, the processor has not answered yet
    COMPLETED = "completed"
    FAILED = "failed"  # declined
    REFUNDED = "refunded"  # was completed


class PaymentCreate(BaseModel):
    """A user pays one of their orders: ``amount`` and ``currency`` must be the order's."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "order_id": 1,
                    "amount": "59.98",
                    "currency": "USD",
                    "payment_method": "credit_card",
                }
            ]
        },
    )

    order_id: OrderId
    amount: Amount
    currency: Currency = DEFAULT_CURRENCY
    payment_method: PaymentMethod = DEFAULT_PAYMENT_METHOD


class OrderCharge(PaymentCreate):
    """The orders service charges an order for its user (internal route)."""

    user_id: Annotated[int, Field(ge=1, le=MAX_ID)]


class PaymentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    order_id: int | None
    amount: Decimal
    currency: str
    payment_method: str
    status: PaymentStatus
    failure_reason: str | None
    transaction_id: str | None
    created_at: Timestamp
    updated_at: Timestamp
    refunded_at: Timestamp | None
