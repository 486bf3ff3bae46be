"""Typed, immutable settings: the only reader of the environment and of `.env`.

`Settings.load()` reads the process environment and the project's `.env` (the
environment wins), validates every value and stops start-up with one line that
names the offending variable. Tests build their own with `Settings.for_testing()`.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from production_checks import (
    production_warnings,
    refuse_unsafe_knobs,
    require_private_sqlite,
    require_strong_secret,
    require_writable_sqlite,
)

PROJECT_ROOT = Path(__file__).resolve().parent
#: The project's own folder for the SQLite database (created 0700).
INSTANCE_DIR = PROJECT_ROOT / "instance"


def usable_cores() -> int:
    """The CPUs this process may run on (a container's or `taskset`'s share, not the
    host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _seconds(value: Any) -> Any:
    """Accept a plain number of seconds, as the environment gives it."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        return float(value)
    return value


Seconds = Annotated[timedelta, BeforeValidator(_seconds)]


def _comma_list(value: Any) -> Any:
    """`a, b,c` from the environment as a tuple; empty items dropped."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _rate_limit(value: Any) -> Any:
    if isinstance(value, str) and not RATE_LIMIT_RE.fullmatch(value.strip()):
        raise ValueError("expected <count>/<second|minute|hour|day>, e.g. 10/minute")
    return value.strip() if isinstance(value, str) else value


ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")
FRONTEND_URL_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?")
RATE_LIMIT_RE = re.compile(r"[1-9]\d{0,8}\s*/\s*(second|minute|hour|day)")
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
RateLimit = Annotated[str, BeforeValidator(_rate_limit)]


class ConfigError(SystemExit):
    """A bad setting: exits start-up with one line naming the variable."""


class Settings(BaseSettings):
    """Every setting of the service, read once and never changed."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
        env_ignore_empty=True,
    )

    env: Literal["development", "testing", "production"] = Field(
        "development", validation_alias=AliasChoices("QUART_ENV", "FLASK_ENV", "env")
    )
    # Unset values below are resolved per environment in `_resolve_environment_defaults`.
    secret_key: SecretStr = SecretStr("")
    jwt_secret_key: SecretStr = SecretStr("")
    database_url: str = "sqlite:///instance/app.db"
    jwt_access_token_expires: Seconds = Field(timedelta(seconds=900), gt=timedelta(0))
    jwt_refresh_token_expires: Seconds = Field(timedelta(days=30), gt=timedelta(0))
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = "HS256"
    #: Retired HMAC secrets still accepted (never used to sign) until their tokens expire.
    jwt_secret_key_fallbacks: CommaList = ()
    #: PEM files for RS256/ES256: the signing key and retired public keys still accepted.
    jwt_private_key_file: Path | None = None
    jwt_public_key_fallback_files: CommaList = ()
    #: Where tokens are read from: `headers`, `cookies` or both (`headers,cookies`).
    jwt_token_location: CommaList = ("headers",)
    jwt_cookie_secure: bool | None = None
    jwt_cookie_samesite: Literal["Lax", "Strict", "None"] = "Lax"
    jwt_cookie_csrf_protect: bool = True
    jwt_issuer: str = Field("quart-auth-api", min_length=1)
    jwt_audience: str = Field("quart-auth-api", min_length=1)
    jwt_refresh_reuse_interval: Seconds = Field(timedelta(seconds=10), ge=timedelta(0))
    bcrypt_rounds: int = Field(12, ge=4, le=31)
    bcrypt_threads: int = Field(1, ge=1, le=64)
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    web_concurrency: int = Field(1, ge=1, le=256)
    max_content_length: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Rate limits, as `<count>/<second|minute|hour|day>`.
    rate_limit_enabled: bool = True
    rate_limit_login: RateLimit = "10/minute"
    rate_limit_login_ip: RateLimit = "100/minute"
    rate_limit_register: RateLimit = "5/hour"
    rate_limit_register_ip: RateLimit = "20/hour"
    rate_limit_refresh: RateLimit = "30/minute"
    rate_limit_refresh_ip: RateLimit = "300/minute"
    #: Shared rate-limit storage for several workers and machines (`redis://host:6379/0`).
    redis_url: str | None = None
    #: Proxies in front that append to X-Forwarded-For; 0 trusts none of it.
    forwarded_proxy_count: int = Field(0, ge=0, le=10)
    #: Origins allowed by CORS (`https://app.example.com,https://admin.example.com`).
    cors_origins: CommaList = ()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: `text` or `json` (one JSON object per line); default json in production.
    log_format: Literal["text", "json"] | None = None
    #: Database pool (PostgreSQL; SQLite uses the same pool limits), timeouts in seconds.
    #: Together they bound a request while PostgreSQL is partitioned away (connections
    #: held, nothing answered): the token check answers 503 within DB_CHECK_TIMEOUT, any
    #: other request within DB_POOL_TIMEOUT + DB_COMMAND_TIMEOUT (4.5 s by default).
    db_pool_size: int = Field(5, ge=1, le=200)
    db_max_overflow: int = Field(10, ge=0, le=200)
    db_pool_timeout: Seconds = Field(timedelta(seconds=2), gt=timedelta(0))
    db_pool_recycle: Seconds = Field(timedelta(minutes=30), gt=timedelta(0))
    db_pool_pre_ping: bool = False
    db_connect_timeout: Seconds = Field(timedelta(seconds=2), gt=timedelta(0))
    db_command_timeout: Seconds = Field(timedelta(seconds=2.5), gt=timedelta(0))
    #: The token check on every request, connecting included (PostgreSQL).
    db_check_timeout: Seconds = Field(timedelta(seconds=1.5), gt=timedelta(0))
    #: At start: `false` fails fast when the schema is behind the migrations; `true`
    #: applies them first.
    db_auto_migrate: bool = False
    #: hypercorn's grace for in-flight requests after SIGTERM.
    graceful_timeout: Seconds = Field(timedelta(seconds=10), ge=timedelta(0))
    #: Session rows expired or revoked longer ago than this are purged.
    session_retention: Seconds = Field(timedelta(days=7), ge=timedelta(0))
    #: Background purge every this many seconds in each worker; 0 turns it off.
    session_purge_interval: Seconds = Field(timedelta(0), ge=timedelta(0))
    session_purge_batch: int = Field(1000, ge=1, le=100_000)
    #: Prometheus metrics at /metrics; with METRICS_TOKEN set, it needs that bearer token.
    metrics_enabled: bool = False
    metrics_token: SecretStr | None = None
    #: prometheus-client's shared directory for several workers (run.py makes a fresh
    #: one when unset); also read by prometheus-client itself.
    prometheus_multiproc_dir: Path | None = None
    docs_enabled: bool = True
    #: Mail: `console` (development's default: printed to stdout), `smtp`, or `none`
    #: (testing's and production's default: the flows that need mail answer 503).
    mail_backend: Literal["console", "smtp", "none"] | None = None
    mail_from: str = Field("Quart Auth API <no-reply@localhost>", min_length=3)
    #: Deliveries tried per message (with backoff) before it is given up as failed.
    mail_max_attempts: int = Field(8, ge=1, le=50)
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_timeout: Seconds = Field(timedelta(seconds=10), gt=timedelta(0))
    #: Where the links in mail point: this + `/reset-password#token=…` (and the others).
    frontend_url: str = "http://localhost:5000"
    #: `optional`: login works before the address is proved; `mandatory`: it does not.
    email_verification: Literal["optional", "mandatory"] = "optional"
    password_reset_token_expires: Seconds = Field(timedelta(hours=1), gt=timedelta(0))
    email_verify_token_expires: Seconds = Field(timedelta(days=1), gt=timedelta(0))
    email_change_token_expires: Seconds = Field(timedelta(hours=1), gt=timedelta(0))
    #: Forgot-password per address (from any client), and per client; resending a verification
    #: link per address (the cooldown) and per client.
    rate_limit_forgot: RateLimit = "3/hour"
    rate_limit_forgot_ip: RateLimit = "30/hour"
    rate_limit_verification: RateLimit = "1/minute"
    rate_limit_verification_ip: RateLimit = "30/hour"
    #: The key that seals TOTP secrets (a Fernet key); unset, one is derived from
    #: SECRET_KEY (HKDF). Retired keys that still open secrets sealed under them.
    mfa_encryption_key: SecretStr | None = None
    mfa_encryption_key_fallbacks: CommaList = ()
    #: The name authenticator apps show beside the account.
    mfa_issuer: str = Field("Quart Auth API", min_length=1, max_length=100)
    #: Second-factor codes (login challenge and enrolment) per account, and per client.
    rate_limit_mfa: RateLimit = "10/hour"
    rate_limit_mfa_ip: RateLimit = "60/hour"
    debug: bool = False

    # -- construction -------------------------------------------------------

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment; exit with one clear line on a bad value."""
        try:
            return cls(**overrides)
        except ValidationError as error:
            raise ConfigError(_one_line(error)) from None

    @classmethod
    def for_testing(cls, **overrides: Any) -> Settings:
        """Settings for the test suite: no `.env`, fast bcrypt, fixed secrets."""
        values: dict[str, Any] = {
            "env": "testing",
            # fixed, and strong enough for production's checks (tests of production mode)
            "secret_key": "testing-only-Qm7vK2pXz9LwR4tNc8bY3hDs6FjA1gEu",
            "jwt_secret_key": "testing-only-Zt5nH8qLx2VcW9rMb4kJ7pYd3sGf6aTe",
            "database_url": "sqlite:///instance/test.db",
        }
        values.update(overrides)
        return cls(_env_file=None, **values)  # type: ignore[call-arg]

    # -- validation ---------------------------------------------------------

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _async_driver_url(cls, value: str) -> str:
        return to_async_url(value)

    @field_validator("jwt_token_location")
    @classmethod
    def _token_locations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - {"headers", "cookies"}
        if not value or unknown:
            raise ValueError("expected headers, cookies or headers,cookies")
        return tuple(dict.fromkeys(value))

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not ORIGIN_RE.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin like https://app.example.com ('*' is refused)"
                )
        return value

    @field_validator("frontend_url")
    @classmethod
    def _frontend_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not FRONTEND_URL_RE.fullmatch(value):
            raise ValueError(
                "expected http(s)://host[:port][/path], no query or fragment, "
                "e.g. https://app.example.com"
            )
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        if self.jwt_algorithm.startswith(("RS", "ES")):
            if self.jwt_private_key_file is None:
                raise ValueError(f"JWT_PRIVATE_KEY_FILE: required for {self.jwt_algorithm}")
            for path in (self.jwt_private_key_file, *map(Path, self.jwt_public_key_fallback_files)):
                if not path.is_file():
                    raise ValueError(f"JWT key file not found: {path}")
        if self.jwt_cookie_samesite == "None" and self.jwt_cookie_secure is False:
            raise ValueError("JWT_COOKIE_SAMESITE: None needs JWT_COOKIE_SECURE=true")
        return self

    @model_validator(mode="after")
    def _resolve_environment_defaults(self) -> Settings:
        production = self.env == "production"
        given = self.model_fields_set
        resolved: dict[str, Any] = {}
        for name in ("secret_key", "jwt_secret_key"):
            if production:
                require_strong_secret(name, getattr(self, name) if name in given else None)
            elif name not in given or not getattr(self, name).get_secret_value():
                resolved[name] = SecretStr(secrets.token_urlsafe(48))
        if production and self.debug:
            raise ValueError("DEBUG: debug mode is refused in production")
        if production and self.is_sqlite:
            require_writable_sqlite(self.database_url)
            require_private_sqlite(self.database_url)
        if production:
            for fallback in self.jwt_secret_key_fallbacks:
                require_strong_secret("jwt_secret_key_fallbacks", SecretStr(fallback))
            if self.metrics_token is not None:
                require_strong_secret("metrics_token", self.metrics_token)
        if self.jwt_cookie_secure is None:
            resolved["jwt_cookie_secure"] = production
        if "bcrypt_rounds" not in given:
            resolved["bcrypt_rounds"] = 4 if self.env == "testing" else 12
        if self.mail_backend is None:
            resolved["mail_backend"] = "console" if self.env == "development" else "none"
        elif production and self.mail_backend == "console":
            raise ValueError("MAIL_BACKEND: console is refused in production (use smtp)")
        if (
            self.email_verification == "mandatory"
            and resolved.get("mail_backend", self.mail_backend) == "none"
        ):
            raise ValueError("EMAIL_VERIFICATION: mandatory needs mail (MAIL_BACKEND=smtp)")
        if self.mail_backend == "smtp" and not self.smtp_host:
            raise ValueError("SMTP_HOST: required with MAIL_BACKEND=smtp")
        if "@" not in parseaddr(self.mail_from)[1] or any(c in self.mail_from for c in "\r\n"):
            raise ValueError("MAIL_FROM: expected an address, e.g. Name <no-reply@example.com>")
        if self.log_format is None:
            resolved["log_format"] = "json" if production else "text"
        cores = usable_cores()
        if "web_concurrency" not in given:
            resolved["web_concurrency"] = cores if production else 1
        if "bcrypt_threads" not in given:  # one hash per core across the machine's workers
            workers = resolved.get("web_concurrency", self.web_concurrency)
            resolved["bcrypt_threads"] = min(64, max(1, cores // workers))
        for name, value in resolved.items():
            object.__setattr__(self, name, value)  # still inside validation
        if production:
            refuse_unsafe_knobs(self)
        return self

    def production_warnings(self) -> list[str]:
        """One line for each deliberate choice production allows but an operator should
        see at start (logged by `create_app`)."""
        return production_warnings(self) if self.is_production else []

    # -- derived values -----------------------------------------------------

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def secrets_generated(self) -> bool:
        """True when a secret was not configured and a random one is in use (either of
        them: SECRET_KEY also keys the account digests that rate limits share)."""
        return any(
            name not in self.model_fields_set or not getattr(self, name).get_secret_value()
            for name in ("secret_key", "jwt_secret_key")
        )


def to_async_url(value: str) -> str:
    """Map a sync-style database URL to its async driver."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError("not a database URL (e.g. sqlite:///instance/app.db)") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
        if url.database and url.database != ":memory:" and not os.path.isabs(url.database):
            url = url.set(database=str(PROJECT_ROOT / url.database))
    elif backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return _render(url)


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


_ENV_NAMES = {"env": "QUART_ENV"}


def _one_line(error: ValidationError) -> str:
    """Render the first validation problem as `config error: VARIABLE: message`."""
    first = error.errors(include_url=False)[0]
    message = first["msg"].removeprefix("Value error, ")
    location = first["loc"]
    if location:
        variable = _ENV_NAMES.get(str(location[0]), str(location[0]).upper())
        return f"config error: {variable}: {message}"
    return f"config error: {message}"
