"""HTTP routes of /users.

Who may list and read users: any authenticated user, and they see public profiles only
(id, username, created_at). E-mail addresses and names are personal data: a user sees
their own at ``GET /users/me`` and nobody else's. There is no admin role: nothing in the
seed needs one, and a role nobody can grant through the API would only be dead weight.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from app.core.auth import CurrentUser
from app.core.schemas import DEFAULT_LIMIT, IdPath, LimitQuery, SkipQuery
from app.users.schemas import LoginRequest, Token, UserCreate, UserPublic, UserRead
from app.users.service import UserServiceDep

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "No valid bearer token"}}


async def register(data: UserCreate, service: UserServiceDep) -> UserRead:
    """A new account; 409 if the e-mail address or the username is taken."""
    return UserRead.model_validate(await service.register(data))


async def login(data: LoginRequest, service: UserServiceDep) -> Token:
    """A bearer token for the username (or e-mail address) and password."""
    return await service.login(data)


async def me(user: CurrentUser, service: UserServiceDep) -> UserRead:
    return UserRead.model_validate(await service.me(user.user_id))


async def list_users(
    user: CurrentUser,
    service: UserServiceDep,
    skip: SkipQuery = 0,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> list[UserPublic]:
    """Public profiles ordered by id, ``limit`` of them after the first ``skip``."""
    return [UserPublic.model_validate(row) for row in await service.list(skip, limit)]


async def get_user(user_id: IdPath, user: CurrentUser, service: UserServiceDep) -> UserPublic:
    return UserPublic.model_validate(await service.get(user_id))


def build_router(prefix: str) -> APIRouter:
    """The routes under ``prefix`` ("/users" in one app; "" for the service on its own)."""
    router = APIRouter(prefix=prefix, tags=["users"])
    router.add_api_route(
        "/register",
        register,
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        responses={409: {"description": "E-mail address or username taken"}},
    )
    router.add_api_route("/login", login, methods=["POST"], responses=UNAUTHORIZED)
    router.add_api_route("/me", me, methods=["GET"], responses=UNAUTHORIZED)
    router.add_api_route("" if prefix else "/", list_users, methods=["GET"], responses=UNAUTHORIZED)
    router.add_api_route(
        "/{user_id}",
        get_user,
        methods=["GET"],
        responses={**UNAUTHORIZED, 404: {"description": "No user with this id"}},
    )
    return router
