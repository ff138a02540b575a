"""Payments: one charge per order through the simulated processor; refunds.

A user pays one of their own orders (``POST /payments``): the orders service is asked
for it with the user's token (another user's order is 404, as if it did not exist) and
the amount and currency must be the order's. The orders service charges its orders
itself at the internal ``POST /payments/internal/charges``, with its service credential
(app/core/auth.py); nothing else may call that route.

Every charge of order N has the key ``order:N``, under the unique (user, key): however
often and by whichever route an order is charged, it has one payment, and a repeat
answers 200 with it (409 if it asks for another method or currency).
"""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import Depends, status
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import metrics
from app.core.auth import Principal
from app.core.errors import (
    ConflictError,
    InvalidStateError,
    MismatchError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
)
from app.core.idempotency import unit_of_work
from app.core.owned import OwnedRows
from app.core.services import ServiceClient, ServiceUnavailable
from app.core.settings import Settings
from app.core.state import OrdersServiceDep, SessionsDep, SettingsDep
from app.payments import processor
from app.payments.models import IDEMPOTENCY_CONSTRAINT, Payment
from app.payments.schemas import PaymentCreate, PaymentStatus

logger = logging.getLogger(__name__)


class PaymentService(OwnedRows[Payment]):
    model = Payment
    kind = "payment"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        orders: ServiceClient | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.orders = orders

    async def pay_order(self, caller: Principal, data: PaymentCreate) -> tuple[Payment, bool]:
        """A user pays their order: checked with the orders service, then charged."""
        order = await self._order(caller, data.order_id)
        try:
            total = Decimal(str(order["total_amount"]))
            currency, order_status = str(order["currency"]), str(order["status"])
        except (KeyError, TypeError, InvalidOperation):
            raise UnavailableError("order service sent an unreadable answer") from None
        if data.amount != total:
            raise MismatchError(
                f"amount {data.amount} does not match the total_amount of order "
                f"{data.order_id}, {total}"
            )
        if data.currency != currency:
            raise MismatchError(
                f"currency {data.currency} does not match the currency of order "
                f"{data.order_id}, {currency}"
            )
        # A failed order was declined (its payment says so: answered with it, as any repeat
        # of a charge is) or never reached payments (nothing to answer with, and not to be
        # charged now: the order stays failed).
        if order_status == "failed" and not await self._has_payment(caller.user_id, data):
            raise ConflictError(
                f"order {data.order_id} failed and cannot be paid; place a new order"
            )
        return await self.charge(caller.user_id, data)

    async def _has_payment(self, user_id: int, data: PaymentCreate) -> bool:
        async with self.sessions() as session:
            found = await session.scalar(
                select(Payment.id).where(
                    Payment.user_id == user_id,
                    Payment.idempotency_key == f"order:{data.order_id}",
                )
            )
        return found is not None

    async def _order(self, caller: Principal, order_id: int) -> dict[str, Any]:
        assert self.orders is not None
        try:
            response = await self.orders.request("GET", f"/orders/{order_id}", token=caller.token)
        except ServiceUnavailable as exc:
            logger.warning("order service unavailable: %s", exc)
            raise UnavailableError("order service unavailable") from None
        if response.status_code == status.HTTP_404_NOT_FOUND:
            raise NotFoundError("order", order_id)
        if response.status_code == status.HTTP_401_UNAUTHORIZED:
            raise UnauthorizedError("unknown user")
        if response.status_code != status.HTTP_200_OK:
            logger.warning("order service answered %s", response.status_code)
            raise UnavailableError("order service unavailable")
        try:
            order = response.json()
            mine = isinstance(order, dict) and order.get("user_id") == caller.user_id
        except ValueError:
            raise UnavailableError("order service sent an unreadable answer") from None
        if not mine:
            raise NotFoundError("order", order_id)
        return dict(order)

    async def charge(self, user_id: int, data: PaymentCreate) -> tuple[Payment, bool]:
        """The payment of this order, and whether this call created it.

        The row is written ``pending`` first, under the unique (user, ``order:{id}``): a
        retry, or a concurrent duplicate, finds it instead of charging again. The
        processor's answer then moves it to ``completed`` or ``failed``. With an
        ``Idempotency-Key`` both steps commit at once, with the key; without one, a
        payment left ``pending`` (the process died in between) is finished by the next
        attempt, with the same answer, since the decision depends only on the key.
        """
        key = f"order:{data.order_id}"
        async with unit_of_work(self.sessions) as session:
            statement = (
                insert(Payment)
                .values(
                    user_id=user_id,
                    order_id=data.order_id,
                    idempotency_key=key,
                    amount=data.amount,
                    currency=data.currency,
                    payment_method=data.payment_method.value,
                    status=PaymentStatus.PENDING,
                )
                .on_conflict_do_nothing(constraint=IDEMPOTENCY_CONSTRAINT)
                .returning(Payment)
            )
            payment = (await session.scalars(statement)).one_or_none()
            created = payment is not None
            if payment is None:
                payment = (
                    await session.scalars(
                        select(Payment).where(
                            Payment.user_id == user_id, Payment.idempotency_key == key
                        )
                    )
                ).one()
                asked = (data.amount, data.currency, data.payment_method.value)
                if (payment.amount, payment.currency, payment.payment_method) != asked:
                    raise ConflictError(
                        f"order {data.order_id} already has payment {payment.id} "
                        f"({payment.amount} {payment.currency} by {payment.payment_method}, "
                        f"{payment.status})"
                    )
        if payment.status == PaymentStatus.PENDING:
            payment = await self._process(payment)
        return payment, created

    async def _process(self, payment: Payment) -> Payment:
        key = payment.idempotency_key or f"payment:{payment.id}"
        seed = self.settings.payment_seed
        if processor.accepts(seed, payment.user_id, key, self.settings.payment_success_rate):
            outcome = {
                "status": PaymentStatus.COMPLETED,
                "transaction_id": processor.transaction_id(seed, payment.user_id, key),
            }
        else:
            outcome = {"status": PaymentStatus.FAILED, "failure_reason": processor.DECLINED}
        async with unit_of_work(self.sessions) as session:
            statement = (
                update(Payment)
                .where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING)
                .values(**outcome, updated_at=func.now())
                .returning(Payment)
                .execution_options(synchronize_session=False, populate_existing=True)
            )
            done = (await session.scalars(statement)).one_or_none()
            decided_here = done is not None  # counted once, by the attempt that decided
            if done is None:  # a concurrent attempt finished it first
                done = await session.get(Payment, payment.id, populate_existing=True)
                assert done is not None
        if decided_here:
            metrics.payment(done.status)
        logger.info("payment %s of user %s: %s", done.id, done.user_id, done.status)
        return done

    async def refund(self, user_id: int, payment_id: int) -> Payment:
        """completed -> refunded, in one statement: two refunds cannot both succeed."""
        async with unit_of_work(self.sessions) as session:
            statement = (
                update(Payment)
                .where(
                    Payment.id == payment_id,
                    Payment.user_id == user_id,
                    Payment.status == PaymentStatus.COMPLETED,
                )
                .values(
                    status=PaymentStatus.REFUNDED, refunded_at=func.now(), updated_at=func.now()
                )
                .returning(Payment)
                .execution_options(synchronize_session=False)
            )
            payment = (await session.scalars(statement)).one_or_none()
        if payment is None:
            current = await self.get(user_id, payment_id)  # 404 unless it is theirs
            raise InvalidStateError(
                f"only a completed payment can be refunded; this one is {current.status}"
            )
        metrics.payment(PaymentStatus.REFUNDED)
        logger.info("payment %s of user %s refunded", payment.id, user_id)
        return payment


async def get_payment_service(
    sessions: SessionsDep, settings: SettingsDep, orders: OrdersServiceDep
) -> PaymentService:
    return PaymentService(sessions, settings, orders)


PaymentServiceDep = Annotated[PaymentService, Depends(get_payment_service)]
