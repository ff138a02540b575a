"""HTTP routes of /users.

Who may list and read users: any authenticated user, and they see public profiles only
(id, username, created_at). E-mail addresses and names are personal data: a user sees
their own at ``GET /users/me`` and nobody else's. There is no admin role: nothing in the
seed needs one, and a role nobody can grant through the API would only be dead weight.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from app.core.auth import CurrentUser
from app.core.idempotency import IdempotentRoute
from app.core.schemas import DEFAULT_LIMIT, IdPath, LimitQuery, SkipQuery
from app.users.schemas import LoginForm, LoginRequest, Token, UserCreate, UserPublic, UserRead
from app.users.service import UserServiceDep

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Both bodies login reads, for the docs (the route reads the request itself).
LOGIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": LoginForm.model_json_schema()},
        },
    }
}

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "No valid bearer token"}}


async def register(data: UserCreate, service: UserServiceDep) -> UserRead:
    """A new account; 409 if the e-mail address or the username is taken."""
    return UserRead.model_validate(await service.register(data))


def _parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


async def read_login(request: Request) -> LoginRequest:
    """JSON (``username`` or ``email``, ``password``) or the OAuth2 password form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        form = await request.form()
        fields: dict[str, Any] = {}
        for name, value in form.multi_items():
            if not isinstance(value, str) or name in fields:
                raise RequestValidationError(
                    [{"type": "value_error", "loc": ("body", name), "msg": "one text value"}]
                )
            fields[name] = value
        login_form: LoginForm = _parse(LoginForm, fields)
        return login_form.as_request()
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "send JSON or a login form"}]
        ) from None
    login_json: LoginRequest = _parse(LoginRequest, data)
    return login_json


async def login(request: Request, service: UserServiceDep) -> Token:
    """A bearer token for a username (or e-mail address) and password.

    JSON ``{"username": <username or e-mail>, "password"}`` or ``{"email", "password"}``,
    or the OAuth2 password form (what the docs' Authorize button sends). After repeated
    failures for one name, 429 with ``Retry-After`` until the lock ends.
    """
    return await service.login(await read_login(request))


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


# The routes at their public paths (/users, /users/{...}), in one app and as a service.
# Registration honours Idempotency-Key (a retry gets the first 201, not a 409).
router = APIRouter(prefix="/users", tags=["users"], route_class=IdempotentRoute)
for path, in_schema in (("/register", True), ("", False)):  # the seed uses both
    router.add_api_route(
        path,
        register,
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        responses={409: {"description": "E-mail address or username taken"}},
        include_in_schema=in_schema,
    )
# Not a write: its answer (a token) is never stored, and a retry simply logs in again.
router.add_api_route(
    "/login",
    login,
    methods=["POST"],
    responses={
        **UNAUTHORIZED,
        429: {"description": "Too many failed logins for this name; see Retry-After"},
    },
    response_model=Token,
    openapi_extra=LOGIN_BODY,
    route_class_override=APIRoute,
)
router.add_api_route("/me", me, methods=["GET"], responses=UNAUTHORIZED)
router.add_api_route("", list_users, methods=["GET"], responses=UNAUTHORIZED)
router.add_api_route(
    "/{user_id}",
    get_user,
    methods=["GET"],
    responses={**UNAUTHORIZED, 404: {"description": "No user with this id"}},
)
