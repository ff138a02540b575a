"""Orders: the server totals the lines and has the payments service charge them, once.

An order spans an HTTP call to payments, so it cannot be one transaction. It is made
*resumable* instead:

1. The caller is authenticated (their user must exist and be active: app/core/auth.py).
2. One transaction writes the order ``pending`` with its lines and, when the request has
   an ``Idempotency-Key``, the key (app/core/idempotency.py), linked to the order. A
   concurrent request with the same key waits on the key's unique index until this
   commits, then resumes the same order instead of writing another.
3. The order is charged at ``POST /payments/internal/charges`` with the orders service's
   credential and ``Idempotency-Key: order:{id}``: whatever is retried, payments makes
   one payment per order and answers every repeat with it.
4. The outcome is recorded (``UPDATE ... WHERE status = 'pending'``, so it happens once):
   ``confirmed``, or ``failed`` with the reason (declined; payments refused the charge,
   or could not be connected to at all, so it cannot have charged). Then the answer is
   stored with the key, and sent: 201 with the order.

When the outcome is unknown (payments timed out, answered 5xx or unreadably: it may have
charged), the order stays ``pending`` and the answer is 201 with that status. A retry of
the request with its key resumes from step 3, as does, without any retry, the sweep:
each worker every ``APP_ORDER_SWEEP_INTERVAL`` seconds, one at a time across workers and
hosts (a PostgreSQL advisory lock), takes the orders pending for more than
``APP_ORDER_STALE_AFTER`` seconds and charges them again with their key, which finds the
payment if there was one. An order whose payment completed therefore never stays
pending, and no order is charged twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Response, status
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import idempotency, metrics
from app.core.auth import Principal, issue_service_token
from app.core.domain import JSONBytes
from app.core.errors import ConflictError
from app.core.owned import OwnedRows
from app.core.services import ServiceClient, ServiceUnavailable
from app.core.settings import Settings
from app.core.state import AppState, PaymentsServiceDep, SessionsDep, SettingsDep
from app.orders.models import Order, OrderItem
from app.orders.schemas import OrderCreate, OrderRead, OrderStatus

logger = logging.getLogger(__name__)

CHARGE_PATH = "/payments/internal/charges"
# pg_try_advisory_xact_lock key of the sweep: one sweeper at a time.
SWEEP_LOCK_KEY = 0x7765627374616B32  # "webstak2"
SWEEP_BATCH = 20

# (status, payment id, failure reason), or None while the outcome is unknown.
Outcome = tuple[OrderStatus, int | None, str | None] | None


def order_json(order: Order) -> bytes:
    return OrderRead.model_validate(order).model_dump_json().encode()


class OrderService(OwnedRows[Order]):
    model = Order
    kind = "order"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        payments: ServiceClient,
        settings: Settings,
    ) -> None:
        self.sessions = sessions
        self.payments = payments
        self.settings = settings

    async def place(
        self, caller: Principal, data: OrderCreate, keyed: idempotency.KeyedRequest | None
    ) -> Response:
        """Steps 2 to 4 of the module docstring; the answer, or the stored one replayed."""
        record_id: int | None = None
        async with self.sessions() as session:
            order: Order | None = None
            if keyed is not None:
                claimed = await idempotency.claim(session, keyed, self.settings.idempotency_ttl)
                record_id = claimed.record_id
                if claimed.record is not None:
                    if claimed.record.status_code is not None:
                        return idempotency.replay(claimed.record)
                    # Committed with its key earlier, not answered yet: resume it.
                    order_id = claimed.record.resource_id
                    order = None if order_id is None else await session.get(Order, order_id)
                    if order is None or order.user_id != caller.user_id:
                        raise ConflictError("the order of this Idempotency-Key is gone")
            if order is None:
                order = self._new_order(caller, data)
                session.add(order)
                await session.flush()
                if record_id is not None:
                    await session.execute(
                        update(idempotency.IdempotencyRecord)
                        .where(idempotency.IdempotencyRecord.id == record_id)
                        .values(resource_id=order.id)
                    )
            await session.commit()
        order = await self.finish(order)
        answer = JSONBytes(order_json(order), status_code=status.HTTP_201_CREATED)
        if record_id is not None and order.status != OrderStatus.PENDING:
            # A pending answer is not final: a retry should resume, not replay it.
            async with self.sessions() as session:
                await idempotency.store(session, record_id, answer)
                await session.commit()
        return answer

    @staticmethod
    def _new_order(caller: Principal, data: OrderCreate) -> Order:
        lines = [
            OrderItem(
                product_name=line.product,
                quantity=line.quantity,
                price=line.price,
                line_total=line.price * line.quantity,
            )
            for line in data.items
        ]
        return Order(
            user_id=caller.user_id,
            status=OrderStatus.PENDING,
            total_amount=data.total,
            currency=data.currency,
            payment_method=data.payment_method.value,
            items=lines,
        )

    async def finish(self, order: Order) -> Order:
        """Charge a pending order (again: the key makes it once) and record the outcome."""
        if order.status != OrderStatus.PENDING:
            return order
        outcome = await self._charge(order)
        if outcome is None:
            return order
        result, payment_id, reason = outcome
        async with self.sessions() as session:
            recorded = await session.execute(
                update(Order)
                .where(Order.id == order.id, Order.status == OrderStatus.PENDING)
                .values(
                    status=result,
                    payment_id=payment_id,
                    failure_reason=reason,
                    updated_at=func.now(),
                )
            )
            await session.commit()
            done = await session.get(Order, order.id, populate_existing=True)
        assert done is not None
        if recorded.rowcount == 1:  # counted once, by the attempt that recorded the outcome
            metrics.order_placed(result)
        logger.info("order %s of user %s: %s", done.id, done.user_id, done.status)
        return done

    async def _charge(self, order: Order) -> Outcome:
        try:
            response = await self.payments.request(
                "POST",
                CHARGE_PATH,
                token=issue_service_token(self.settings),
                json={
                    "order_id": order.id,
                    "user_id": order.user_id,
                    "amount": str(order.total_amount),
                    "currency": order.currency,
                    "payment_method": order.payment_method,
                },
                headers={idempotency.KEY_HEADER: f"order:{order.id}"},
            )
        except ServiceUnavailable as exc:
            logger.warning("order %s: payment service unavailable: %s", order.id, exc)
            if exc.maybe_delivered:
                return None  # it may have charged: ask again later, with the same key
            return OrderStatus.FAILED, None, "payment service unavailable"
        code = response.status_code
        # 404: a payments service of the previous release, without the route yet (a deploy
        # in progress); it charged nothing, and the sweep asks again once it has the route.
        if code >= 500 or code == status.HTTP_404_NOT_FOUND:
            logger.warning("order %s: payment service answered %s", order.id, code)
            return None
        if code not in (status.HTTP_200_OK, status.HTTP_201_CREATED):
            logger.warning("order %s: payment service refused the charge: %s", order.id, code)
            return OrderStatus.FAILED, None, f"payment service answered {code}"
        try:
            payment = response.json()
            payment_id, payment_status = int(payment["id"]), str(payment["status"])
        except (ValueError, KeyError, TypeError):
            logger.warning("order %s: payment service sent an unreadable answer", order.id)
            return None
        if payment_status in ("completed", "refunded"):
            return OrderStatus.CONFIRMED, payment_id, None
        if payment_status == "failed":
            return OrderStatus.FAILED, payment_id, "payment declined"
        return None  # still pending at payments

    async def sweep(self) -> int | None:
        """Finish the orders pending too long; ``None`` if another worker is sweeping."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.order_stale_after)
        async with self.sessions() as session:
            # Held until this transaction ends, that is while these orders are charged.
            locked = await session.scalar(select(func.pg_try_advisory_xact_lock(SWEEP_LOCK_KEY)))
            if not locked:
                return None
            stale = list(
                await session.scalars(
                    select(Order)
                    .where(Order.status == OrderStatus.PENDING, Order.created_at < cutoff)
                    .order_by(Order.created_at)
                    .limit(SWEEP_BATCH)
                )
            )
            for order in stale:
                finished = await self.finish(order)
                if finished.status == OrderStatus.PENDING:
                    break  # payments still cannot answer: try again next time
            await session.commit()
        return len(stale)


async def _sweep_forever(service: OrderService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval * random.uniform(0.5, 1.5))  # noqa: S311  # jitter
        try:
            await service.sweep()
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("order sweep failed: %s: %s", type(exc).__name__, exc)


@asynccontextmanager
async def sweeper(state: AppState) -> AsyncIterator[None]:
    """The per-worker sweep of stale pending orders, for the domain's lifespan."""
    payments = state.need("payments_service", state.payments_service)
    service = OrderService(state.sessions, payments, state.settings)
    task = asyncio.create_task(_sweep_forever(service, state.settings.order_sweep_interval))
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def get_order_service(
    sessions: SessionsDep, payments: PaymentsServiceDep, settings: SettingsDep
) -> OrderService:
    return OrderService(sessions, payments, settings)


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
