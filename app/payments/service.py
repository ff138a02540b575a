"""Payments: charge through the simulated processor, once per idempotency key; refunds."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import metrics
from app.core.owned import OwnedRows
from app.core.settings import Settings
from app.payments import processor
from app.payments.models import IDEMPOTENCY_CONSTRAINT, Payment
from app.payments.schemas import PaymentCreate, PaymentStatus

logger = logging.getLogger(__name__)


class PaymentService(OwnedRows[Payment]):
    model = Payment
    kind = "payment"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    async def charge(
        self, user_id: int, data: PaymentCreate, key: str | None
    ) -> tuple[Payment, bool]:
        """The payment for this charge, and whether this call created it.

        The row is written ``pending`` first, under the unique (user, key): a retry, or a
        concurrent duplicate, finds it instead of charging again. The processor's answer
        then moves it to ``completed`` or ``failed``; a payment left ``pending`` (the
        process died in between) is finished by the next attempt with its key, with the
        same answer, since the decision depends only on the key.
        """
        if key is None and data.order_id is not None:
            key = f"order:{data.order_id}"
        async with self.sessions() as session:
            statement = (
                insert(Payment)
                .values(
                    user_id=user_id,
                    order_id=data.order_id,
                    idempotency_key=key,
                    amount=data.amount,
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
                if payment.amount != data.amount or payment.order_id != data.order_id:
                    raise HTTPException(
                        status.HTTP_409_CONFLICT,
                        detail="this Idempotency-Key was used for a different charge",
                    )
            await session.commit()
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
        async with self.sessions() as session:
            statement = (
                update(Payment)
                .where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING)
                .values(**outcome, updated_at=func.now())
                .returning(Payment)
                .execution_options(synchronize_session=False)
            )
            done = (await session.scalars(statement)).one_or_none()
            decided_here = done is not None  # counted once, by the attempt that decided
            if done is None:  # a concurrent attempt finished it first
                done = await session.get(Payment, payment.id)
                assert done is not None
            await session.commit()
        if decided_here:
            metrics.payment(done.status)
        logger.info("payment %s of user %s: %s", done.id, done.user_id, done.status)
        return done

    async def refund(self, user_id: int, payment_id: int) -> Payment:
        """completed -> refunded, in one statement: two refunds cannot both succeed."""
        async with self.sessions() as session:
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
            await session.commit()
        if payment is None:
            current = await self.get(user_id, payment_id)  # 404 unless it is theirs
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                detail=f"only a completed payment can be refunded; this one is {current.status}",
            )
        metrics.payment(PaymentStatus.REFUNDED)
        logger.info("payment %s of user %s refunded", payment.id, user_id)
        return payment


async def get_payment_service(request: Request) -> PaymentService:
    return PaymentService(request.app.state.sessionmaker, request.app.state.settings)


PaymentServiceDep = Annotated[PaymentService, Depends(get_payment_service)]
