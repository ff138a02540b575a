"""The ``payments`` table."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, DateTime, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.charges import DEFAULT_CURRENCY, DEFAULT_PAYMENT_METHOD
from app.core.database import Base
from app.core.money import MoneyColumn

STATUSES = ("pending", "completed", "failed", "refunded")
IDEMPOTENCY_CONSTRAINT = "uq_payments_user_id_idempotency_key"


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        # One payment per order: every charge of order N has the key "order:N" (keys are
        # per user; payments made before 0003 may have other keys, or none: NULL never
        # conflicts). A retried charge finds the payment its first attempt made.
        UniqueConstraint("user_id", "idempotency_key", name=IDEMPOTENCY_CONSTRAINT),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)  # serial
    # The users and orders live in other services: ids, not foreign keys.
    user_id: Mapped[int] = mapped_column(index=True)
    order_id: Mapped[int | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[Decimal] = mapped_column(MoneyColumn)
    currency: Mapped[str] = mapped_column(String(3), server_default=DEFAULT_CURRENCY)
    payment_method: Mapped[str] = mapped_column(
        String(32), server_default=DEFAULT_PAYMENT_METHOD.value
    )
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
