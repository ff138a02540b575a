"""Request and response bodies of /orders.

A line names its product as ``name`` or, as the seed's model does, ``product_name``. The
total is the server's sum of quantity x price; a client may send the ``total_amount`` it
expects, which must equal the server's to the cent (else 422 naming both), and is never
taken as the total. Any other unknown field (``total``, ``line_total``...) is a 422, so a
client learns at once that it cannot set it. Answers carry both the seed's names
(``total_amount``, ``product_name``) and this API's earlier ones (``total``, ``name``).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from app.core.charges import DEFAULT_CURRENCY, DEFAULT_PAYMENT_METHOD, Currency, PaymentMethod
from app.core.money import Amount, Price
from app.core.schemas import Name, Timestamp

MAX_LINES = 100
MAX_QUANTITY = 1000

# Strict: 2.0, "2" and true are not quantities.
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]


class OrderStatus(StrEnum):
    PENDING = "pending"  # recorded, the charge's outcome not known yet
    CONFIRMED = "confirmed"  # paid
    FAILED = "failed"  # declined, or the payment service refused or could not be reached


class OrderLineCreate(BaseModel):
    # The schema says what _one_name checks: exactly one of the two names is a string.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": [field], "properties": {field: {"type": "string"}}}
                for field in ("name", "product_name")
            ]
        },
    )

    name: Name | None = None
    product_name: Name | None = None
    quantity: Quantity
    price: Price

    @model_validator(mode="after")
    def _one_name(self) -> Self:
        if (self.name is None) == (self.product_name is None):
            raise ValueError("give the product's name as either name or product_name")
        return self

    @property
    def product(self) -> str:
        return self.product_name or self.name or ""


class OrderCreate(BaseModel):
    # The example is the seed's shape; the docs show it, and the schema tests send it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [{"product_name": "Widget", "quantity": 2, "price": "29.99"}],
                    "total_amount": "59.98",
                    "currency": "USD",
                    "payment_method": "credit_card",
                }
            ]
        },
    )

    items: Annotated[list[OrderLineCreate], Field(min_length=1, max_length=MAX_LINES)]
    # What the client expects to pay: checked, never trusted.
    total_amount: Amount | None = None
    currency: Currency = DEFAULT_CURRENCY
    payment_method: PaymentMethod = DEFAULT_PAYMENT_METHOD

    @property
    def total(self) -> Decimal:
        return sum((line.price * line.quantity for line in self.items), Decimal(0))

    @model_validator(mode="after")
    def _total_matches(self) -> Self:
        if self.total_amount is not None and self.total_amount != self.total:
            raise ValueError(
                f"total_amount {self.total_amount} does not match the total of the items, "
                f"{self.total}"
            )
        return self


class OrderLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_name: str
    quantity: int
    price: Decimal
    line_total: Decimal

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        """The same as ``product_name`` (this API's earlier name)."""
        return self.product_name


class OrderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    status: OrderStatus
    total_amount: Decimal
    currency: str
    payment_method: str
    payment_id: int | None
    failure_reason: str | None
    items: list[OrderLineRead]
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> Decimal:
        """The same as ``total_amount`` (this API's earlier name)."""
        return self.total_amount
