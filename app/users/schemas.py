"""Request and response bodies of /users, and the rules for usernames and passwords.

Password rule: 8 to 128 characters, with characters of at least two of four kinds
(lower-case letters, upper-case letters, digits, anything else: punctuation, spaces,
non-ASCII letters), and not the username or the e-mail address. The length bounds the
work a login may ask of Argon2 as well as guessing; the kinds refuse ``12345678`` and
``password``; nothing else is imposed (no forced symbols, no expiry), as NIST SP 800-63B
advises.

Usernames are 3 to 32 characters of ``a-z 0-9 . _ -`` starting with a letter or a digit,
and, like e-mail addresses, are compared without regard to case: both are stored
lower-case, so ``Alice`` and ``alice`` are one account.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)

from app.core.schemas import Name, Timestamp

PASSWORD_MIN = 8
PASSWORD_MAX = 128


def _lower(value: Any) -> Any:
    # ASCII only: "\u212a" (the Kelvin sign) lower-cases to "k", and is no username letter.
    return value.lower() if isinstance(value, str) and value.isascii() else value


def _strong(password: str) -> str:
    if "\x00" in password:
        raise ValueError("must not contain NUL characters")
    kinds = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password) or any(not c.isascii() for c in password),
    )
    if sum(kinds) < 2:
        raise ValueError(
            "must mix at least two of: lower-case letters, upper-case letters, digits, "
            "other characters"
        )
    return password


Username = Annotated[
    str,
    BeforeValidator(_lower),
    Field(
        min_length=3,
        max_length=32,
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        # What a request may send (upper case too); pydantic leaves the pattern out of the
        # request schema once a validator runs before it.
        json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"},
    ),
]
Email = Annotated[EmailStr, AfterValidator(str.lower)]
NewPassword = Annotated[
    str,
    Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX),
    AfterValidator(_strong),
]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    username: Username
    password: NewPassword
    full_name: Name | None = None

    @model_validator(mode="after")
    def _password_not_a_name(self) -> Self:
        if self.password.lower() in (self.username, self.email):
            raise ValueError("password must not be the username or the e-mail address")
        return self


LoginName = Annotated[str, Field(min_length=1, max_length=254)]
# Any length the register rule ever allowed; no strength check at login.
LoginPassword = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX)]


class LoginRequest(BaseModel):
    """``{"username": <username or e-mail>, "password"}`` or ``{"email", "password"}``."""

    model_config = ConfigDict(extra="forbid")

    username: LoginName | None = None
    email: LoginName | None = None
    password: LoginPassword

    @model_validator(mode="after")
    def _one_name(self) -> Self:
        if (self.username is None) == (self.email is None):
            raise ValueError("give either username (a username or an e-mail address) or email")
        return self

    @property
    def name(self) -> str:
        """The username or e-mail address to look up, lower-case."""
        return (self.username or self.email or "").lower()


class LoginForm(BaseModel):
    """The OAuth2 password grant (RFC 6749, 4.3) as the docs' Authorize button sends it."""

    model_config = ConfigDict(extra="forbid")

    grant_type: Literal["password"] | None = None
    username: LoginName
    password: LoginPassword
    # Part of the grant; nothing here uses them.
    scope: Annotated[str, Field(max_length=1000)] = ""
    client_id: Annotated[str, Field(max_length=255)] | None = None
    client_secret: Annotated[str, Field(max_length=255)] | None = None

    def as_request(self) -> LoginRequest:
        return LoginRequest(username=self.username, password=self.password)


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  # the scheme, not a secret
    expires_in: int = Field(description="Seconds until the token expires")


class UserRead(BaseModel):
    """A user as the user sees themselves."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    username: str
    full_name: str | None
    is_active: bool
    created_at: Timestamp


class UserPublic(BaseModel):
    """A user as other users see them: no e-mail address."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    created_at: Timestamp
