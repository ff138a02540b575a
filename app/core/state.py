"""What a worker holds while it runs, built in one place (the lifespan, app/main.py).

Every resource has a name and a type here: nothing else is kept on ``app.state`` but the
one :class:`AppState` (and the tracer provider, which exists before the lifespan). Routes
and services get what they need through the ``Annotated`` aliases below, e.g.::

    async def get_order_service(
        sessions: SessionsDep, payments: PaymentsServiceDep, settings: SettingsDep
    ) -> OrderService: ...

A domain's own resources have their aliases in the domain (``PasswordsDep`` in
app/users/passwords.py).

Some resources exist only where a domain that needs them is served (the password hasher
with users; the payments service's client with orders): asking for one elsewhere is a
programming error, said by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi import Depends, Request
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from app.core.cache import Cache
from app.core.services import ServiceClient
from app.core.settings import Settings

if TYPE_CHECKING:  # these modules import this one
    from app.core.auth import UserCheck
    from app.users.lockout import LoginLockout
    from app.users.passwords import Passwords

T = TypeVar("T")


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: Cache
    tracer_provider: TracerProvider | None
    # Whether a token's user may act: the users table where users is served, else the
    # users service (app/core/auth.py); None in an app without users, orders or payments.
    user_check: UserCheck | None = None
    # The users domain's.
    passwords: Passwords | None = None
    login_lockout: LoginLockout | None = None
    # Clients of the other services (app/core/services.py), where a served domain calls
    # them: users (orders, payments: tokens), payments (orders: charges), orders (payments).
    users_service: ServiceClient | None = None
    payments_service: ServiceClient | None = None
    orders_service: ServiceClient | None = None

    def need(self, name: str, value: T | None) -> T:
        if value is None:
            raise RuntimeError(f"this app has no {name}: none of its domains needs one")
        return value


def state_of(app: Starlette) -> AppState:
    """The running app's state; an error before its lifespan has started or after it ended."""
    state: AppState | None = getattr(app.state, "resources", None)
    if state is None:
        raise RuntimeError("the app's lifespan is not running")
    return state


async def get_state(request: Request) -> AppState:
    # async: a plain `def` dependency would be run in a worker thread on every request.
    return state_of(request.app)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_sessions(state: StateDep) -> async_sessionmaker[AsyncSession]:
    return state.sessions


async def get_cache(state: StateDep) -> Cache:
    return state.cache


async def get_payments_service(state: StateDep) -> ServiceClient:
    return state.need("payments_service", state.payments_service)


async def get_orders_service(state: StateDep) -> ServiceClient:
    return state.need("orders_service", state.orders_service)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
CacheDep = Annotated[Cache, Depends(get_cache)]
PaymentsServiceDep = Annotated[ServiceClient, Depends(get_payments_service)]
OrdersServiceDep = Annotated[ServiceClient, Depends(get_orders_service)]
