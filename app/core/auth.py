"""Bearer tokens: HS256 JWTs that the users service issues and every service checks.

A token carries ``sub`` (the user id, as a string, as RFC 7519 wants), ``iat``, ``exp``
and ``iss``. Decoding always pins the algorithm list to HS256, so a token whose header
says ``none``, ``HS512`` or an asymmetric algorithm is refused before its signature is
looked at, and requires every one of those claims. Any refusal is a 401 with
``WWW-Authenticate: Bearer``; the detail says only "expired", "invalid" or "unknown user".

A well-signed token is valid only while its user exists and is active. Each app has a
:class:`UserCheck` (``AppState.user_check``, app/core/state.py): the users service reads
its own table (``app/users/service.py``); orders and payments ask the users service
(``GET /users/me`` with the token) and keep its answer ``APP_AUTH_CACHE_TTL`` seconds per
worker, so a deleted or deactivated user's tokens stop working everywhere within that
time. When the users service cannot answer, the request is 503: an unchecked token is not
trusted.

The key is ``APP_JWT_SECRET``, shared by the services that issue or check tokens.

**Service credential.** The orders service charges orders, and finishes them later from a
sweep where no user's token is at hand, through ``POST /payments/internal/charges``. It
authenticates there with a short-lived JWT signed by a key derived from ``APP_JWT_SECRET``
(HMAC-SHA256 of it with a fixed label) with ``sub`` = ``service:orders`` and ``aud`` =
``webstack:payments``. A user token can never pass for it (other key, no audience) nor it
for a user token (PyJWT refuses an audience it was not told to expect), and only that
internal route accepts it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Annotated, Protocol

import jwt
from fastapi import Depends, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer

from app.core.errors import UnauthorizedError, UnavailableError
from app.core.schemas import MAX_ID
from app.core.services import ServiceClient, ServiceUnavailable
from app.core.settings import Settings
from app.core.state import state_of

ALGORITHM = "HS256"
ISSUER = "webstack"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub"]
# Far above any token we issue; refuses megabyte headers before any parsing.
MAX_TOKEN_LENGTH = 2048
_USER_ID = re.compile(r"[1-9][0-9]{0,9}")
# Where every service's docs get a token (the OAuth2 password form of the users service).
TOKEN_URL = "/users/login"  # noqa: S105  # a path, not a secret

SERVICE_SUBJECT = "service:orders"
SERVICE_AUDIENCE = "webstack:payments"
SERVICE_TOKEN_LIFETIME = 60
_SERVICE_KEY_LABEL = b"webstack service credential: orders -> payments"


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
    """The user a valid token speaks for; raises :class:`UnauthorizedError` otherwise."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise UnauthorizedError("invalid token")
    try:
        claims = jwt.decode(
            token,
            _secret(settings),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise UnauthorizedError("token expired") from None
    except jwt.InvalidTokenError:
        raise UnauthorizedError("invalid token") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not _USER_ID.fullmatch(subject) or int(subject) > MAX_ID:
        raise UnauthorizedError("invalid token")
    return int(subject)


def _service_key(settings: Settings) -> bytes:
    return hmac.new(_secret(settings).encode(), _SERVICE_KEY_LABEL, hashlib.sha256).digest()


def issue_service_token(settings: Settings) -> str:
    """The orders service's credential at the payments service, valid for a minute."""
    now = int(time.time())
    claims = {
        "sub": SERVICE_SUBJECT,
        "aud": SERVICE_AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + SERVICE_TOKEN_LIFETIME,
    }
    return jwt.encode(claims, _service_key(settings), algorithm=ALGORITHM)


def check_service_token(token: str, settings: Settings) -> None:
    """Raises :class:`UnauthorizedError` unless ``token`` is the orders service's credential."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise UnauthorizedError("invalid token")
    try:
        claims = jwt.decode(
            token,
            _service_key(settings),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=SERVICE_AUDIENCE,
            options={"require": [*REQUIRED_CLAIMS, "aud"]},
        )
    except jwt.InvalidTokenError:
        raise UnauthorizedError("invalid token") from None
    if claims["sub"] != SERVICE_SUBJECT:
        raise UnauthorizedError("invalid token")


class UserCheck(Protocol):
    async def is_active(self, user_id: int, token: str) -> bool:
        """Whether the user exists and may act; :class:`UnavailableError` when unknown."""
        ...


class RemoteUserCheck:
    """Asks the users service, and remembers each answer for ``ttl`` seconds (per worker)."""

    MAX_ENTRIES = 10_000

    def __init__(self, users: ServiceClient, ttl: float) -> None:
        self.users = users
        self.ttl = ttl
        self._answers: dict[int, tuple[float, bool]] = {}

    async def is_active(self, user_id: int, token: str) -> bool:
        now = time.monotonic()
        cached = self._answers.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            response = await self.users.request("GET", "/users/me", token=token)
        except ServiceUnavailable:
            raise UnavailableError("user service unavailable") from None
        if response.status_code == status.HTTP_200_OK:
            try:
                active = response.json()["id"] == user_id
            except (ValueError, KeyError, TypeError):
                raise UnavailableError("user service unavailable") from None
        elif response.status_code == status.HTTP_401_UNAUTHORIZED:
            active = False
        else:
            raise UnavailableError("user service unavailable")
        if self.ttl > 0:
            if len(self._answers) >= self.MAX_ENTRIES:
                self._answers.clear()  # crude, bounded, and only costs a few extra calls
            self._answers[user_id] = (now + self.ttl, active)
        return active


_PRINCIPAL = "webstack.principal"


@dataclass(frozen=True)
class Principal:
    """The caller: the user its token names, and the token (to act for it elsewhere)."""

    user_id: int
    token: str


# The password flow, so that the Authorize button of every service's docs logs in at the
# users service and sends the token as a bearer header.
_oauth2 = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    auto_error=False,
    description="Log in with a username (or e-mail address) and password; the "
    "`access_token` of `POST /users/login` is sent as a bearer token.",
)


async def authenticate(
    request: Request, token: Annotated[str | None, Depends(_oauth2)]
) -> Principal:
    """The caller, whose token is valid and whose user exists and is active (else 401)."""
    # Kept in the request's own scope (request.state may be shared by a test harness).
    known: Principal | None = request.scope.get(_PRINCIPAL)
    if known is not None:  # checked once already (app/core/idempotency.py)
        return known
    if token is None:
        raise UnauthorizedError("not authenticated", error=None)
    state = state_of(request.app)
    principal = Principal(user_id_from_token(token, state.settings), token)
    check = state.need("user_check", state.user_check)
    if not await check.is_active(principal.user_id, token):
        raise UnauthorizedError("unknown user")
    request.scope[_PRINCIPAL] = principal
    return principal


async def authenticate_request(request: Request) -> Principal:
    """:func:`authenticate` outside dependency injection."""
    return await authenticate(request, await _oauth2(request))


CurrentUser = Annotated[Principal, Depends(authenticate)]

_service_bearer = HTTPBearer(auto_error=False, scheme_name="OrdersServiceCredential")


async def authenticate_orders_service(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_service_bearer)],
) -> None:
    """Only the orders service's credential passes (internal routes)."""
    if credentials is None:
        raise UnauthorizedError("not authenticated", error=None)
    check_service_token(credentials.credentials, state_of(request.app).settings)


async def authenticate_service_request(request: Request) -> None:
    """:func:`authenticate_orders_service` outside dependency injection."""
    await authenticate_orders_service(request, await _service_bearer(request))


OrdersServiceCaller = Depends(authenticate_orders_service)
