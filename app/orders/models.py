"""The ``orders`` and ``order_items`` tables."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.charges import DEFAULT_CURRENCY, DEFAULT_PAYMENT_METHOD
from app.core.database import Base
from app.core.money import MoneyColumn

STATUSES = ("pending", "confirmed", "failed")


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total > 0", name="total_positive"),
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
        # What the sweep reads: the few orders whose charge has no known outcome yet.
        Index("ix_orders_pending", "created_at", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)  # serial
    # Users and payments live in other services: ids, not foreign keys.
    user_id: Mapped[int] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16))
    # The seed's names in the API, the columns' own in the table: a rename would break
    # the workers still running the previous release while a deploy migrates.
    total_amount: Mapped[Decimal] = mapped_column("total", MoneyColumn)
    currency: Mapped[str] = mapped_column(String(3), server_default=DEFAULT_CURRENCY)
    payment_method: Mapped[str] = mapped_column(
        String(32), server_default=DEFAULT_PAYMENT_METHOD.value
    )
    payment_id: Mapped[int | None]
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    # Loaded with the order (one more SELECT ... IN), as every answer shows the lines.
    items: Mapped[list[OrderItem]] = relationship(
        lazy="selectin", order_by="OrderItem.id", cascade="all, delete-orphan"
    )


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("price > 0", name="price_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    product_name: Mapped[str] = mapped_column("name", String(255))  # the column keeps its name
    quantity: Mapped[int]
    price: Mapped[Decimal] = mapped_column(MoneyColumn)  # per unit
    line_total: Mapped[Decimal] = mapped_column(MoneyColumn)
