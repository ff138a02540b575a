"""The ``users`` table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, func, true
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)  # serial
    # Both stored lower-case (see schemas), so the unique constraints ignore case.
    email: Mapped[str] = mapped_column(String(254), unique=True)  # uq_users_email
    username: Mapped[str] = mapped_column(String(32), unique=True)  # uq_users_username
    full_name: Mapped[str | None] = mapped_column(String(255))
    # Argon2id in PHC format ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    password_hash: Mapped[str] = mapped_column(String(255))
    # False: the account may not log in, and its tokens stop working everywhere (within
    # APP_AUTH_CACHE_TTL). Set by an operator (UPDATE users SET is_active = false ...).
    is_active: Mapped[bool] = mapped_column(server_default=true())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
