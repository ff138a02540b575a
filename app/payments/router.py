"""HTTP routes of /payments: a user's own payments only (another's are 404)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from app.core.auth import CurrentUser, OrdersServiceCaller
from app.core.idempotency import IdempotentRoute
from app.core.openapi import VALIDATION_ERRORS_OR_MESSAGE
from app.core.schemas import DEFAULT_LIMIT, IdPath, LimitQuery, SkipQuery
from app.payments.schemas import OrderCharge, PaymentCreate, PaymentRead
from app.payments.service import PaymentServiceDep

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "No valid bearer token"}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No payment of yours"}}
# The path only the orders service may call; nginx must not route it (see app/README.md).
INTERNAL_CHARGES = "/internal/charges"


async def create_payment(
    data: PaymentCreate, user: CurrentUser, service: PaymentServiceDep, response: Response
) -> PaymentRead:
    """Pay your order ``order_id``: ``amount`` and ``currency`` must be the order's.

    201 with the new payment, ``completed`` or ``failed`` (declined); 200 with the
    existing payment when the order has one already (an order is charged once).
    """
    payment, created = await service.pay_order(user, data)
    if not created:
        response.status_code = status.HTTP_200_OK
    return PaymentRead.model_validate(payment)


async def charge_order(
    data: OrderCharge, service: PaymentServiceDep, response: Response
) -> PaymentRead:
    """The orders service charges an order for its user (its credential only)."""
    payment, created = await service.charge(data.user_id, data)
    if not created:
        response.status_code = status.HTTP_200_OK
    return PaymentRead.model_validate(payment)


async def list_payments(
    user: CurrentUser,
    service: PaymentServiceDep,
    skip: SkipQuery = 0,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> list[PaymentRead]:
    """Your payments ordered by id."""
    rows = await service.list(user.user_id, skip, limit)
    return [PaymentRead.model_validate(row) for row in rows]


async def get_payment(
    payment_id: IdPath, user: CurrentUser, service: PaymentServiceDep
) -> PaymentRead:
    return PaymentRead.model_validate(await service.get(user.user_id, payment_id))


async def refund_payment(
    payment_id: IdPath, user: CurrentUser, service: PaymentServiceDep
) -> PaymentRead:
    """Refund a completed payment; 400 for any other status."""
    return PaymentRead.model_validate(await service.refund(user.user_id, payment_id))


# The routes at their public paths (/payments, /payments/{...}), in one app and as a service.
# Writes honour Idempotency-Key: a retried charge or refund is answered, not redone.
router = APIRouter(prefix="/payments", tags=["payments"], route_class=IdempotentRoute)
router.add_api_route(
    "",
    create_payment,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    responses={
        **UNAUTHORIZED,
        200: {"description": "The order's existing payment", "model": PaymentRead},
        404: {"description": "No order of yours with this id"},
        409: {"description": "The order failed, or was paid by another method"},
        422: {
            "description": "Bad input (FastAPI's validation errors), or not the order's "
            "amount or currency (a message)",
            "content": VALIDATION_ERRORS_OR_MESSAGE,
        },
        503: {"description": "The user or order service cannot be reached"},
    },
)
router.add_api_route(
    INTERNAL_CHARGES,
    charge_order,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    dependencies=[OrdersServiceCaller],
    include_in_schema=False,
)
router.add_api_route("", list_payments, methods=["GET"], responses=UNAUTHORIZED)
router.add_api_route(
    "/{payment_id}", get_payment, methods=["GET"], responses={**UNAUTHORIZED, **NOT_FOUND}
)
router.add_api_route(
    "/{payment_id}/refund",
    refund_payment,
    methods=["POST"],
    responses={
        **UNAUTHORIZED,
        **NOT_FOUND,
        400: {"description": "The payment is not completed (pending, failed, refunded)"},
    },
)
