"""HTTP routes of /orders: a user's own orders only (another's are 404)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from app.core import idempotency
from app.core.auth import CurrentUser
from app.core.schemas import DEFAULT_LIMIT, IdPath, LimitQuery, SkipQuery
from app.orders.schemas import OrderCreate, OrderRead
from app.orders.service import OrderServiceDep

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "No valid bearer token"}}


async def create_order(
    request: Request, data: OrderCreate, user: CurrentUser, service: OrderServiceDep
) -> Response:
    """Place an order and charge it: 201 with status ``confirmed`` or ``failed``, or
    ``pending`` while the payment's outcome is unknown (it is then finished shortly).

    With an ``Idempotency-Key``, a retry answers with the first attempt's order (resuming
    it if it was interrupted), never a second order or a second charge.
    """
    key = idempotency.key_from(request)
    keyed = None
    if key is not None:
        keyed = await idempotency.keyed_request(request, f"user:{user.user_id}", key)
    return await service.place(user, data, keyed)


async def list_orders(
    user: CurrentUser,
    service: OrderServiceDep,
    skip: SkipQuery = 0,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> list[OrderRead]:
    """Your orders ordered by id."""
    rows = await service.list(user.user_id, skip, limit)
    return [OrderRead.model_validate(row) for row in rows]


async def get_order(order_id: IdPath, user: CurrentUser, service: OrderServiceDep) -> OrderRead:
    return OrderRead.model_validate(await service.get(user.user_id, order_id))


# The routes at their public paths (/orders, /orders/{...}), in one app and as a service.
router = APIRouter(prefix="/orders", tags=["orders"])
router.add_api_route(
    "",
    create_order,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    responses={
        **UNAUTHORIZED,
        409: {"description": "The order this Idempotency-Key placed is gone"},
        422: {"description": "Bad input, or an Idempotency-Key used for another request"},
        503: {"description": "The user service cannot be reached"},
    },
    openapi_extra={"parameters": [idempotency.KEY_PARAMETER]},
)
router.add_api_route("", list_orders, methods=["GET"], responses=UNAUTHORIZED)
router.add_api_route(
    "/{order_id}",
    get_order,
    methods=["GET"],
    responses={**UNAUTHORIZED, 404: {"description": "No order of yours"}},
)
