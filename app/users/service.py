"""Users: registration, login, profiles, and whether a token's user may act.

PostgreSQL holds the accounts (nothing here is cached); Valkey holds the failed-login
counts (``lockout.py``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.auth import issue_token
from app.core.errors import ConflictError, NotFoundError, TooManyAttempts, UnauthorizedError
from app.core.idempotency import unit_of_work
from app.core.settings import Settings
from app.core.state import SessionsDep, SettingsDep
from app.users.lockout import LoginLockout, LoginLockoutDep
from app.users.models import User
from app.users.passwords import Passwords, PasswordsDep
from app.users.schemas import LoginRequest, Token, UserCreate

EMAIL_TAKEN = "e-mail address already registered"
USERNAME_TAKEN = "username already taken"


BAD_LOGIN = "incorrect username or password"


class LocalUserCheck:
    """The users service's own answer to "may this token's user act?": its table."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def is_active(self, user_id: int, token: str) -> bool:
        async with self.sessions() as session:
            active = await session.scalar(select(User.is_active).where(User.id == user_id))
        return bool(active)


class UserService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        settings: Settings,
        lockout: LoginLockout,
    ) -> None:
        self.sessions = sessions
        self.passwords = passwords
        self.settings = settings
        self.lockout = lockout

    async def register(self, data: UserCreate) -> User:
        # Checked first so that a taken name costs no hash; the unique constraints still
        # decide when two registrations race. A read: it does not open the write (and
        # hold a connection through the hash).
        async with self.sessions() as session:
            taken = (
                await session.execute(
                    select(User.email, User.username).where(
                        or_(User.email == data.email, User.username == data.username)
                    )
                )
            ).all()
        if any(row.email == data.email for row in taken):
            raise ConflictError(EMAIL_TAKEN)
        if taken:
            raise ConflictError(USERNAME_TAKEN)
        user = User(
            email=data.email,
            username=data.username,
            full_name=data.full_name,
            password_hash=await self.passwords.hash(data.password),
        )
        try:
            async with unit_of_work(self.sessions) as session:
                session.add(user)
                await session.flush()  # the unique constraints speak here
        except IntegrityError as exc:
            taken = EMAIL_TAKEN if "uq_users_email" in str(exc) else USERNAME_TAKEN
            raise ConflictError(taken) from None
        return user

    async def login(self, data: LoginRequest) -> Token:
        """A token, or 401 for a wrong name or password (alike), or 429 while locked."""
        name = data.name
        wait = await self.lockout.retry_after(name)
        if wait is not None:
            raise TooManyAttempts("too many failed logins; try again later", retry_after=wait)
        column = User.email if "@" in name else User.username
        async with self.sessions() as session:
            user = await session.scalar(select(User).where(column == name))
        if user is None:
            await self.passwords.verify_unknown_user(data.password)
            valid, new_hash = False, None
        else:
            valid, new_hash = await self.passwords.verify(data.password, user.password_hash)
        if user is None or not valid or not user.is_active:
            await self.lockout.failed(name)
            raise UnauthorizedError(BAD_LOGIN, error=None)
        await self.lockout.succeeded(name)
        if new_hash is not None:  # the hash costs changed since: upgrade it now
            async with self.sessions() as session:
                await session.execute(
                    update(User).where(User.id == user.id).values(password_hash=new_hash)
                )
                await session.commit()
        token, lifetime = issue_token(user.id, self.settings)
        return Token(access_token=token, expires_in=lifetime)

    async def me(self, user_id: int) -> User:
        async with self.sessions() as session:
            user = await session.get(User, user_id)
        if user is None or not user.is_active:  # a valid token of an account gone or off
            raise UnauthorizedError("unknown user")
        return user

    async def get(self, user_id: int) -> User:
        async with self.sessions() as session:
            user = await session.get(User, user_id)
        if user is None:
            raise NotFoundError("user", user_id)
        return user

    async def list(self, skip: int, limit: int) -> list[User]:
        async with self.sessions() as session:
            rows = await session.scalars(select(User).order_by(User.id).offset(skip).limit(limit))
            return list(rows)


async def get_user_service(
    sessions: SessionsDep, passwords: PasswordsDep, settings: SettingsDep, lockout: LoginLockoutDep
) -> UserService:
    return UserService(sessions, passwords, settings, lockout)


UserServiceDep = Annotated[UserService, Depends(get_user_service)]
