"""HTTP routes of /payments: a user's own payments only (another's are 404)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from app.core.auth import CurrentUser
from app.core.schemas import DEFAULT_LIMIT, IdPath, LimitQuery, SkipQuery
from app.payments.schemas import IdempotencyKey, PaymentCreate, PaymentRead
from app.payments.service import PaymentServiceDep

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "No valid bearer token"}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No payment of yours"}}


async def create_payment(
    data: PaymentCreate,
    user: CurrentUser,
    service: PaymentServiceDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> PaymentRead:
    """Charge ``amount``. 201 with the new payment, ``completed`` or ``failed`` (declined);
    200 with the existing one when its idempotency key was seen before."""
    payment, created = await service.charge(user.user_id, data, idempotency_key)
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


def build_router(prefix: str) -> APIRouter:
    """The routes under ``prefix`` ("/payments" in one app; "" for the service alone)."""
    router = APIRouter(prefix=prefix, tags=["payments"])
    root = "" if prefix else "/"
    router.add_api_route(
        root,
        create_payment,
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        responses={
            **UNAUTHORIZED,
            200: {"description": "A retry: the payment this key made before", "model": PaymentRead},
            409: {"description": "The idempotency key was used for another charge"},
        },
    )
    router.add_api_route(root, list_payments, methods=["GET"], responses=UNAUTHORIZED)
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
    return router
