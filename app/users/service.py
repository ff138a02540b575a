"""Users: registration, login, profiles. PostgreSQL only (nothing here is cached)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.auth import issue_token, unauthorized
from app.core.errors import NotFoundError
from app.core.settings import Settings
from app.users.models import User
from app.users.passwords import Passwords
from app.users.schemas import LoginRequest, Token, UserCreate

EMAIL_TAKEN = "e-mail address already registered"
USERNAME_TAKEN = "username already taken"


def _conflict(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=detail)


class UserService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], passwords: Passwords, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.passwords = passwords
        self.settings = settings

    async def register(self, data: UserCreate) -> User:
        # Checked first so that a taken name costs no hash; the unique constraints still
        # decide when two registrations race.
        async with self.sessions() as session:
            taken = (
                await session.execute(
                    select(User.email, User.username).where(
                        or_(User.email == data.email, User.username == data.username)
                    )
                )
            ).all()
        if any(row.email == data.email for row in taken):
            raise _conflict(EMAIL_TAKEN)
        if taken:
            raise _conflict(USERNAME_TAKEN)
        user = User(
            email=data.email,
            username=data.username,
            full_name=data.full_name,
            password_hash=await self.passwords.hash(data.password),
        )
        async with self.sessions() as session:
            session.add(user)
            try:
                await session.commit()
            except IntegrityError as exc:
                taken = EMAIL_TAKEN if "uq_users_email" in str(exc) else USERNAME_TAKEN
                raise _conflict(taken) from None
        return user

    async def login(self, data: LoginRequest) -> Token:
        name = data.username.lower()
        column = User.email if "@" in name else User.username
        async with self.sessions() as session:
            user = await session.scalar(select(User).where(column == name))
        if user is None:
            await self.passwords.verify_unknown_user(data.password)
            raise unauthorized("incorrect username or password", error=None)
        valid, new_hash = await self.passwords.verify(data.password, user.password_hash)
        if not valid:
            raise unauthorized("incorrect username or password", error=None)
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
        if user is None:  # a valid token for an account that is gone
            raise unauthorized("unknown user")
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


async def get_user_service(request: Request) -> UserService:
    state = request.app.state
    return UserService(state.sessionmaker, state.passwords, state.settings)


UserServiceDep = Annotated[UserService, Depends(get_user_service)]
