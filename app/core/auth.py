"""Bearer tokens: HS256 JWTs that the users service issues and every service checks.

A token carries ``sub`` (the user id, as a string, as RFC 7519 wants), ``iat``, ``exp``
and ``iss``. Decoding always pins the algorithm list to HS256, so a token whose header
says ``none``, ``HS512`` or an asymmetric algorithm is refused before its signature is
looked at, and requires every one of those claims. Any refusal is a 401 with
``WWW-Authenticate: Bearer``; the detail says only "expired" or "invalid".

The key is ``APP_JWT_SECRET``, shared by the services that issue or check tokens.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.schemas import MAX_ID
from app.core.settings import Settings

ALGORITHM = "HS256"
ISSUER = "webstack"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub"]
# Far above any token we issue; refuses megabyte headers before any parsing.
MAX_TOKEN_LENGTH = 2048
_USER_ID = re.compile(r"[1-9][0-9]{0,9}")


def unauthorized(detail: str, error: str | None = "invalid_token") -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge}
    )


def _secret(settings: Settings) -> str:
    # Start-up refuses a users, orders or payments app without it (DOMAIN_REQUIREMENTS).
    assert settings.jwt_secret is not None
    return settings.jwt_secret.get_secret_value()


def issue_token(user_id: int, settings: Settings) -> tuple[str, int]:
    """A signed token for ``user_id`` and its lifetime in seconds."""
    lifetime = settings.jwt_expire_minutes * 60
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + lifetime, "iss": ISSUER}
    return jwt.encode(claims, _secret(settings), algorithm=ALGORITHM), lifetime


def user_id_from_token(token: str, settings: Settings) -> int:
    """The user a valid token speaks for; raises the 401 otherwise."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise unauthorized("invalid token")
    try:
        claims = jwt.decode(
            token,
            _secret(settings),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise unauthorized("invalid token") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not _USER_ID.fullmatch(subject) or int(subject) > MAX_ID:
        raise unauthorized("invalid token")
    return int(subject)


@dataclass(frozen=True)
class Principal:
    """The caller: the user its token names, and the token (to act for it elsewhere)."""

    user_id: int
    token: str


_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="The `access_token` that `POST /users/login` returns.",
)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise unauthorized("not authenticated", error=None)
    token = credentials.credentials
    return Principal(user_id_from_token(token, request.app.state.settings), token)


CurrentUser = Annotated[Principal, Depends(authenticate)]
