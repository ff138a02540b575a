"""Payments: one charge per order through a simulated processor; refunds."""

from typing import cast

from sqlalchemy import Table

from app.core.domain import Domain
from app.core.idempotency import IdempotencyRecord
from app.payments.models import Payment
from app.payments.router import router

domain = Domain(
    name="payments",
    router=router,
    tables=(cast(Table, Payment.__table__), cast(Table, IdempotencyRecord.__table__)),
)
