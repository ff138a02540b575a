"""Application settings, read from ``APP_*`` environment variables.

Every setting is documented in ``app/README.md``. A missing or malformed setting stops
start-up with one :class:`SettingsError` naming every offending variable, rather than a
pydantic traceback per field. Secrets are :class:`~pydantic.SecretStr`, so they never
appear in a repr, a log line or an error message.

``python -m app.core.settings`` checks the current environment and prints the settings
with secrets masked (exit status 0), or the error (exit status 2).
"""

from __future__ import annotations

import sys
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL

ENV_PREFIX = "APP_"

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class SettingsError(Exception):
    """The environment does not hold a usable configuration."""


class DatabaseSettings(BaseSettings):
    """What reaching PostgreSQL takes: all that ``python -m app.migrate`` reads."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", frozen=True
    )

    # PostgreSQL: required, as in the seed.
    db_user: str
    db_pass: SecretStr
    db_host: str
    db_port: Port
    db_name: str
    # Each Gunicorn worker owns one pool: hosts x workers x (size + overflow) must stay
    # below PostgreSQL's max_connections, with room for a reload's overlap.
    db_pool_size: Annotated[int, Field(ge=1)] = 5
    db_max_overflow: Annotated[int, Field(ge=0)] = 5
    db_pool_timeout: PositiveSeconds = 10.0
    db_pool_recycle: Annotated[int, Field(ge=-1)] = 1800
    db_connect_timeout: PositiveSeconds = 5.0
    db_command_timeout: PositiveSeconds = 30.0
    # The seed creates its tables at start-up; production runs migrations once per deploy
    # (`python -m app.migrate`) and turns this off.
    db_create_schema: bool = True

    def database_url(self) -> URL:
        """The SQLAlchemy URL for asyncpg (its string form masks the password)."""
        return URL.create(
            "postgresql+asyncpg",
            username=self.db_user,
            password=self.db_pass.get_secret_value(),
            host=self.db_host,
            port=self.db_port,
            database=self.db_name,
        )


class Settings(DatabaseSettings):
    """Everything the app reads from its environment (names are ``APP_`` + field, upper case)."""

    # Valkey: required, as in the seed.
    cache_host: str
    cache_port: Port
    cache_pass: SecretStr
    cache_db: Annotated[int, Field(ge=0)]
    cache_ttl: Annotated[int, Field(ge=1)] = 60
    cache_enabled: bool = True
    # Short timeouts make a dead or hung cache cost milliseconds, not seconds.
    cache_connect_timeout: PositiveSeconds = 0.05
    cache_socket_timeout: PositiveSeconds = 0.05
    cache_max_connections: Annotated[int, Field(ge=1)] = 64
    # After this many consecutive cache errors, spread over at least the span, the cache is
    # bypassed for the cool-down; then one request tries it again.
    cache_failure_threshold: Annotated[int, Field(ge=1)] = 3
    cache_failure_span: Annotated[float, Field(ge=0)] = 0.2
    cache_cooldown: PositiveSeconds = 5.0


def env_name(field: str) -> str:
    """The environment variable that feeds ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings() -> Settings:
    """Read the settings from the environment, or raise one :class:`SettingsError`."""
    try:
        return Settings()  # type: ignore[call-arg]  # required fields come from the environment
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def load_database_settings() -> DatabaseSettings:
    """Only the ``APP_DB_*`` settings, for tools that never touch the cache."""
    try:
        return DatabaseSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    missing: list[str] = []
    invalid: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        name = env_name(str(error["loc"][0])) if error["loc"] else ENV_PREFIX + "*"
        if error["type"] == "missing":
            missing.append(name)
        else:
            invalid.append(f"{name} ({error['msg']})")
    parts = []
    if missing:
        parts.append("missing required settings: " + ", ".join(sorted(missing)))
    if invalid:
        parts.append("invalid settings: " + ", ".join(sorted(invalid)))
    return "; ".join(parts)


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"app: {exc}", file=sys.stderr)
        return 2
    for field, value in settings.model_dump().items():
        print(f"{env_name(field)}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
