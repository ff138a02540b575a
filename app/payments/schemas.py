"""Request and response bodies of /payments."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from fastapi import Header
from pydantic import BaseModel, ConfigDict, Field

from app.core.money import Amount
from app.core.schemas import MAX_ID, Timestamp


class PaymentStatus(StrEnum):
    PENDING = "pending"  # recorded, the processor has not answered yet
    COMPLETED = "completed"
    FAILED = "failed"  # declined
    REFUNDED = "refunded"  # was completed


# Printable ASCII without spaces, as the IETF draft's examples (UUIDs, tokens).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Makes a retried charge return the payment of the first attempt instead of "
            "charging again. Without it, `order_id` serves as the key (`order:{order_id}`)."
        ),
    ),
]


class PaymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    order_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None


class PaymentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    order_id: int | None
    amount: Decimal
    status: PaymentStatus
    failure_reason: str | None
    transaction_id: str | None
    created_at: Timestamp
    updated_at: Timestamp
    refunded_at: Timestamp | None
