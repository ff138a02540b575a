"""Orders: lines totalled by the server, charged once over HTTP, finished if interrupted."""

from typing import cast

from sqlalchemy import Table

from app.core.domain import Domain
from app.core.idempotency import IdempotencyRecord
from app.orders.models import Order, OrderItem
from app.orders.router import router
from app.orders.service import sweeper

domain = Domain(
    name="orders",
    router=router,
    tables=(
        cast(Table, Order.__table__),
        cast(Table, OrderItem.__table__),
        cast(Table, IdempotencyRecord.__table__),
    ),
    # Per worker: the sweep of orders left pending (app/orders/service.py).
    lifespan=sweeper,
)
