r"""Application settings, read from ``APP_*`` environment variables.

Every setting is documented in ``app/README.md``. A missing or malformed setting stops
start-up with one :class:`SettingsError` naming every offending variable, rather than a
pydantic traceback per field. Secrets are :class:`~pydantic.SecretStr`, so they never
appear in a repr, a log line or an error message.

**Settings files.** A deployed service keeps its settings in files of ``KEY=VALUE`` lines
(``APP_ENV_FILES``, paths separated by ``:``; later files win), read with python-dotenv as
written: in double quotes with ``\\`` and ``\"`` escaped a value is taken literally (any
character but a line break: ``'``, ``$`` and ``#`` included); nothing is expanded.
:func:`apply_env_files` makes the environment what the files say (what they no longer name
goes): Gunicorn's config does it on start and on every reload, so new workers get the new
settings (``app/gunicorn_conf.py``), as do ``python -m app.migrate`` and the check below.

``python -m app.core.settings [FILE...]`` checks the settings the files give (without
FILE: ``APP_ENV_FILES``, or else the environment as it is) and prints them with secrets
masked (exit status 0), or the error (exit status 2). ``--each FILE...`` checks once per
FILE that exists, each on top of the first ones: a shared file against every service's
own (which holds the service's secrets); when none of them exists yet, the first files
are only read (each service's file is checked with them when it is written). The
Ansible role runs it on a settings file before the file replaces the live one.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

from dotenv import dotenv_values
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy import URL

ENV_PREFIX = "APP_"
# The settings files of a deployed service, separated by ":" (app/gunicorn_conf.py).
ENV_FILES_VARIABLE = "APP_ENV_FILES"
# Settings of these kinds (the app's, the OpenTelemetry SDK's) that the files no longer
# name are removed when they are applied. Others they set (PROMETHEUS_MULTIPROC_DIR, which
# must not change under a running master) are only ever set.
FILE_VARIABLE_PREFIXES = (ENV_PREFIX, "OTEL_")

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]

# Every domain of the codebase, and the ones `app.main:app` serves unless APP_DOMAINS says
# otherwise (the seed-000 app: the deployed catalog depends on it).
DOMAIN_NAMES: tuple[str, ...] = ("items", "notes", "users", "orders", "payments")
DEFAULT_DOMAINS: tuple[str, ...] = ("items", "notes")
# Settings that are optional in general but required where one of these domains is served.
# The cache's password only where a domain uses the cache (items and notes cache their
# reads, users keeps its login lockout there): each service gets only its own secrets.
DOMAIN_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "items": ("cache_pass",),
    "notes": ("cache_pass",),
    "users": ("jwt_secret", "cache_pass"),
    "orders": ("jwt_secret", "users_url", "payments_url"),
    # Payments checks tokens' users at the users service and orders at the orders service.
    "payments": ("jwt_secret", "users_url", "orders_url"),
}


def _split_names(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(name.strip() for name in value.split(",") if name.strip())
    return value


def _known_domains(names: tuple[str, ...]) -> tuple[str, ...]:
    if not names:
        raise ValueError("name at least one domain")
    unknown = sorted(set(names) - set(DOMAIN_NAMES))
    if unknown:
        raise ValueError(f"unknown domains {', '.join(unknown)}; known: {', '.join(DOMAIN_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError("a domain is named twice")
    return names


def _root_path(value: str) -> str:
    if value and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
        raise ValueError("must be empty or a path like /users (no trailing slash)")
    return value


def _service_url(value: str) -> str:
    """``http://host[:port][/base]``, ``https://...`` or ``unix:/absolute/socket/path``."""
    if value.startswith("unix:"):
        if not value.startswith("unix:/") or len(value) == len("unix:/"):
            raise ValueError("a socket is given as unix:/absolute/path")
        return value
    if not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
        raise ValueError("must be http://host[:port][/path], https://... or unix:/path")
    return value.rstrip("/")


def _long_secret(value: SecretStr) -> SecretStr:
    # HS256 wants a key at least as long as its 256-bit hash (RFC 7518, section 3.2).
    if len(value.get_secret_value().encode()) < 32:
        raise ValueError("must be at least 32 bytes long")
    return value


DomainList = Annotated[
    tuple[str, ...], NoDecode, BeforeValidator(_split_names), AfterValidator(_known_domains)
]
RootPath = Annotated[str, AfterValidator(_root_path)]
ServiceURL = Annotated[str, AfterValidator(_service_url)]


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


class ServingSettings(BaseSettings):
    """What shapes the app itself, read when it is built (so none of it is required)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", frozen=True
    )

    # The domains this process serves, comma separated: one app with all of them, or one
    # service per domain (users, orders, payments; items,notes as the catalog).
    domains: DomainList = DEFAULT_DOMAINS
    # The path prefix the gateway publishes this service under (e.g. /users): its own
    # pages (docs, openapi.json, metrics, health) are served under it; every domain's
    # routes are at their public paths whatever it is.
    root_path: RootPath = ""
    # GET /metrics in the Prometheus format (for the internal scraper; nginx must not
    # route it).
    metrics_enabled: bool = True
    # Requests one worker works on at once; more wait in line before they start, so that
    # timeouts inside the app measure its dependencies, not its own queue
    # (app/core/concurrency.py). At most APP_CACHE_MAX_CONNECTIONS.
    max_concurrent_requests: Annotated[int, Field(ge=1)] = 64
    # The largest request body read, in bytes; larger ones are refused with 413 before they
    # are read (app/core/body.py). nginx's client_max_body_size should be the same value.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 65536
    # How deep arrays and objects may nest in a JSON body (ours need 3); deeper is 422,
    # found by a scan of the bytes before any parser recurses into them.
    max_json_depth: Annotated[int, Field(ge=4, le=256)] = 32
    # The release in service (the deploy writes it; /health reports it).
    release: Annotated[str, Field(max_length=128)] = "unknown"


class Settings(DatabaseSettings, ServingSettings):
    """Everything the app reads from its environment (names are ``APP_`` + field, upper case)."""

    # Valkey: required, as in the seed; its password only where a domain uses the cache
    # (DOMAIN_REQUIREMENTS): without one the cache is off.
    cache_host: str
    cache_port: Port
    cache_pass: SecretStr | None = None
    cache_db: Annotated[int, Field(ge=0)]
    cache_ttl: Annotated[int, Field(ge=1)] = 60
    cache_enabled: bool = True
    # Short timeouts make a dead or hung cache cost a fraction of a second, not seconds; not
    # shorter, because they also time the worker's own event loop and the host's scheduler:
    # at 50 ms a saturated 2-core host tripped the breaker now and then with Valkey healthy
    # (bench/stack.py), sending a busy worker's reads to PostgreSQL for the cool-down.
    cache_connect_timeout: PositiveSeconds = 0.2
    cache_socket_timeout: PositiveSeconds = 0.2
    cache_max_connections: Annotated[int, Field(ge=1)] = 64
    # After this many consecutive cache errors, spread over at least the span, the cache is
    # bypassed for the cool-down; then one request tries it again.
    cache_failure_threshold: Annotated[int, Field(ge=1)] = 3
    cache_failure_span: Annotated[float, Field(ge=0)] = 0.2
    cache_cooldown: PositiveSeconds = 5.0

    # Users, orders, payments: see DOMAIN_REQUIREMENTS for which of them need what.
    # HS256 key shared by every service that issues or checks tokens (32+ characters).
    jwt_secret: Annotated[SecretStr, AfterValidator(_long_secret)] | None = None
    jwt_expire_minutes: Annotated[int, Field(ge=1, le=10080)] = 30
    # Argon2id cost (RFC 9106's second recommendation by default; OWASP's minimum is
    # m=19456 KiB, t=2). Hashes made with other costs are upgraded at the next login.
    password_hash_time_cost: Annotated[int, Field(ge=2, le=20)] = 3
    password_hash_memory_kib: Annotated[int, Field(ge=19456, le=1048576)] = 65536
    # Hashes computed at once per worker (each takes the memory above).
    password_hash_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    # Where the orders service reaches the users and payments APIs: a server that answers
    # their public paths (/users/me, /payments): the gateway, the single app's own
    # socket, or the service's socket.
    users_url: ServiceURL | None = None
    payments_url: ServiceURL | None = None
    # Where the payments service reaches /orders/{id} (to check an order before charging it).
    orders_url: ServiceURL | None = None
    service_connect_timeout: PositiveSeconds = 1.0
    service_timeout: PositiveSeconds = 5.0
    # The simulated payment processor: the share of charges it accepts, and the seed that
    # (with the user and the idempotency key) decides each one, so a decision is repeatable.
    payment_success_rate: Annotated[float, Field(ge=0, le=1)] = 0.8
    payment_seed: Annotated[str, Field(min_length=1, max_length=255)] = "webstack"

    # Exactly-once writes (app/core/idempotency.py): how long a stored answer to an
    # Idempotency-Key is replayed; older ones are deleted by a periodic per-worker task.
    idempotency_ttl: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400
    # How long a worker trusts the users service's answer that a token's user exists and is
    # active (orders, payments); 0 asks every time. A deleted user's token dies within it.
    auth_cache_ttl: Annotated[float, Field(ge=0, le=300)] = 5.0
    # Orders left pending (the charge's outcome unknown: a worker died, payments timed
    # out) are finished by a per-worker sweep that re-asks payments, one sweeper at a time.
    order_sweep_interval: PositiveSeconds = 5.0
    # Only orders pending at least this long are swept (longer than a charge may take).
    order_stale_after: PositiveSeconds = 15.0
    # Failed logins per account (e-mail or username, known or not) before each further
    # failure locks it: lockout_base seconds, doubling per failure up to lockout_max.
    # The count is forgotten failure_window seconds after the last failure.
    login_max_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    login_lockout_base: PositiveSeconds = 30.0
    login_lockout_max: PositiveSeconds = 900.0
    login_failure_window: Annotated[int, Field(ge=1)] = 3600


def env_name(field: str) -> str:
    """The environment variable that feeds ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def required_for(domains: Iterable[str]) -> list[str]:
    """The optional settings that serving ``domains`` makes required."""
    return sorted({field for name in domains for field in DOMAIN_REQUIREMENTS.get(name, ())})


def load_settings(domains: Sequence[str] | None = None) -> Settings:
    """Read the settings from the environment, or raise one :class:`SettingsError`.

    ``domains`` defaults to ``APP_DOMAINS``; the settings those domains need are reported
    missing in the same message as every other problem.
    """
    try:
        settings = Settings()  # type: ignore[call-arg]  # required fields come from the environment
    except ValidationError as exc:
        missing, invalid = _problems(exc)
        if domains is None:
            domains = _domains_from_environment()
        bad = {entry.split(" ", 1)[0] for entry in invalid}
        present = {name.upper() for name in os.environ}
        for field in required_for(domains):
            name = env_name(field)
            if name not in bad and name not in present:
                missing.append(name)
        raise SettingsError(_format(missing, invalid)) from None
    check_required(settings, settings.domains if domains is None else domains)
    return settings


def check_required(settings: Settings, domains: Iterable[str]) -> None:
    """Raise :class:`SettingsError` naming the settings ``domains`` need but lack."""
    missing = [env_name(f) for f in required_for(domains) if getattr(settings, f) is None]
    if missing:
        raise SettingsError(_format(missing, []))


def load_serving_settings() -> ServingSettings:
    """Only what shapes the app (domains, root path, metrics): read when it is built."""
    try:
        return ServingSettings()
    except ValidationError as exc:
        raise SettingsError(_format(*_problems(exc))) from None


def load_database_settings() -> DatabaseSettings:
    """Only the ``APP_DB_*`` settings, for tools that never touch the cache."""
    try:
        return DatabaseSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(_format(*_problems(exc))) from None


def _domains_from_environment() -> tuple[str, ...]:
    try:
        return ServingSettings().domains
    except ValidationError:
        return ()  # APP_DOMAINS itself is wrong, and reported as such


def _problems(exc: ValidationError) -> tuple[list[str], list[str]]:
    missing: list[str] = []
    invalid: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        name = env_name(str(error["loc"][0])) if error["loc"] else ENV_PREFIX + "*"
        if error["type"] == "missing":
            missing.append(name)
        else:
            invalid.append(f"{name} ({error['msg']})")
    return missing, invalid


def _format(missing: list[str], invalid: list[str]) -> str:
    parts = []
    if missing:
        parts.append("missing required settings: " + ", ".join(sorted(set(missing))))
    if invalid:
        parts.append("invalid settings: " + ", ".join(sorted(invalid)))
    return "; ".join(parts)


def env_files_from_environment() -> list[str]:
    """The files ``APP_ENV_FILES`` names (none when it is unset or empty)."""
    return [path for path in os.environ.get(ENV_FILES_VARIABLE, "").split(":") if path]


def read_env_files(paths: Iterable[str | Path]) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of the files, later files winning; values as written.

    A file that cannot be read is a :class:`SettingsError` naming it. Values are never
    expanded (``${X}`` in a password stays ``${X}``).
    """
    values: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as stream:
                read = dotenv_values(stream=stream, interpolate=False)
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc}") from None
        values.update({key: value for key, value in read.items() if value is not None})
    return values


def apply_env_files(paths: Iterable[str | Path]) -> None:
    """Make the environment what the files say, as a restart with them would.

    ``APP_*`` and ``OTEL_*`` variables that they no longer name are removed (but
    ``APP_ENV_FILES`` itself).
    """
    values = read_env_files(paths)
    for name in list(os.environ):
        kind = name.startswith(FILE_VARIABLE_PREFIXES) and name != ENV_FILES_VARIABLE
        if kind and name not in values:
            del os.environ[name]
    os.environ.update(values)


def _check(files: list[str]) -> int:
    try:
        if files:
            apply_env_files(files)
        settings = load_settings()
    except SettingsError as exc:
        where = f" ({', '.join(files)})" if files else ""
        print(f"app: {exc}{where}", file=sys.stderr)
        return 2
    for field, value in settings.model_dump().items():
        shown = ",".join(value) if isinstance(value, tuple) else value
        print(f"{env_name(field)}={'' if shown is None else shown}")
    return 0


def _parse(files: list[str]) -> int:
    try:
        read_env_files(files)
    except SettingsError as exc:
        print(f"app: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.core.settings",
        description="Check the settings (of the files given, else APP_ENV_FILES, else the "
        "environment) and print them, secrets masked; exit status 2 if they are unusable.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="settings files, in order")
    parser.add_argument(
        "--each",
        nargs="*",
        default=[],
        metavar="FILE",
        help="check once per FILE that exists, on top of the files before (a service's own)",
    )
    args = parser.parse_args(argv)
    files = list(args.files) or env_files_from_environment()
    extra = [path for path in args.each if os.path.exists(path)]
    if args.each and not extra:
        # A shared file before any service's own exists (a new host): it holds part of the
        # settings only, so it is only read here; each service's file is checked with it.
        return _parse(files)
    if not extra:
        return _check(files)
    return max(_check([*files, path]) for path in extra)


if __name__ == "__main__":
    raise SystemExit(main())
