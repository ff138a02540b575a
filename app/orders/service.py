"""Orders: the server totals the lines, checks the user, and has the payments service charge.

Creating an order:

1. ``GET /users/me`` at the users service with the caller's token: the account must
   still exist (401 if not). If the users service cannot answer, nothing is written and
   the answer is 503: an order for an unchecked user is not taken.
2. The order is written ``pending``, with its lines and the total computed here.
3. ``POST /payments`` at the payments service, with the caller's token (so the payment
   is theirs) and ``Idempotency-Key: order:{id}``, so no retry can charge twice.
4. The order becomes ``confirmed`` if the payment completed, else ``failed`` with the
   reason: declined, the service unreachable or too slow, or an error status. The order
   is kept either way, and the answer is 201.

A charge that times out may still have completed at the payments service; the order then
says ``failed`` while the payment says ``completed`` (refundable, or found again by a
retry with the same key). Reconciling the two is left to a later change.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import metrics
from app.core.auth import Principal, unauthorized
from app.core.owned import OwnedRows
from app.core.services import ServiceClient, ServiceUnavailable
from app.orders.models import Order, OrderItem
from app.orders.schemas import OrderCreate, OrderStatus

logger = logging.getLogger(__name__)


class OrderService(OwnedRows[Order]):
    model = Order
    kind = "order"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        users: ServiceClient,
        payments: ServiceClient,
    ) -> None:
        self.sessions = sessions
        self.users = users
        self.payments = payments

    async def create(self, caller: Principal, data: OrderCreate) -> Order:
        await self._check_user(caller)
        lines = [
            OrderItem(
                name=line.name,
                quantity=line.quantity,
                price=line.price,
                line_total=line.price * line.quantity,
            )
            for line in data.items
        ]
        order = Order(
            user_id=caller.user_id,
            status=OrderStatus.PENDING,
            total=sum((line.line_total for line in lines), Decimal(0)),
            items=lines,
        )
        async with self.sessions() as session:
            session.add(order)
            await session.commit()
        outcome, payment_id, reason = await self._charge(caller, order)
        async with self.sessions() as session:
            await session.execute(
                update(Order)
                .where(Order.id == order.id)
                .values(
                    status=outcome,
                    payment_id=payment_id,
                    failure_reason=reason,
                    updated_at=func.now(),
                )
            )
            await session.commit()
            updated = await session.get(Order, order.id, populate_existing=True)
        assert updated is not None
        metrics.order_placed(outcome)
        return updated

    async def _check_user(self, caller: Principal) -> None:
        try:
            response = await self.users.request("GET", "/users/me", token=caller.token)
        except ServiceUnavailable as exc:
            logger.warning("user service unavailable: %s", exc)
            raise _unavailable("user service unavailable") from None
        if response.status_code == status.HTTP_200_OK:
            if response.json().get("id") == caller.user_id:
                return
        elif response.status_code == status.HTTP_401_UNAUTHORIZED:
            raise unauthorized("unknown user")
        logger.warning("user service answered %s to GET /users/me", response.status_code)
        raise _unavailable("user service unavailable")

    async def _charge(
        self, caller: Principal, order: Order
    ) -> tuple[OrderStatus, int | None, str | None]:
        try:
            response = await self.payments.request(
                "POST",
                "/payments",
                token=caller.token,
                json={"order_id": order.id, "amount": str(order.total)},
                headers={"Idempotency-Key": f"order:{order.id}"},
            )
        except ServiceUnavailable as exc:
            logger.warning("order %s: payment service unavailable: %s", order.id, exc)
            return OrderStatus.FAILED, None, "payment service unavailable"
        if response.status_code not in (status.HTTP_200_OK, status.HTTP_201_CREATED):
            logger.warning("order %s: payment service answered %s", order.id, response.status_code)
            return OrderStatus.FAILED, None, f"payment service answered {response.status_code}"
        try:
            payment = response.json()
            payment_id, payment_status = int(payment["id"]), str(payment["status"])
        except (ValueError, KeyError, TypeError):
            logger.warning("order %s: payment service sent an unreadable answer", order.id)
            return OrderStatus.FAILED, None, "payment service sent an unreadable answer"
        if payment_status == "completed":
            return OrderStatus.CONFIRMED, payment_id, None
        reason = "payment declined" if payment_status == "failed" else f"payment {payment_status}"
        return OrderStatus.FAILED, payment_id, reason


def _unavailable(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail=detail, headers={"Retry-After": "1"}
    )


async def get_order_service(request: Request) -> OrderService:
    state = request.app.state
    return OrderService(state.sessionmaker, state.users_service, state.payments_service)


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
