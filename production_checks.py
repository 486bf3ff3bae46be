"""What production refuses, and what it warns about: checks of settings' values.

`settings.py` calls them while it validates; they read nothing from the environment
themselves. Each refusal is a `ValueError` whose message starts with the variable, so
that start-up stops with one line naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from settings import Settings

MIN_SECRET_BYTES = 32
#: A secret with fewer distinct characters, or with a block of this many characters
#: three times over, is guessable whatever its length.
MIN_DISTINCT_CHARACTERS = 10
REPEATED_BLOCK = 4
MIN_PRODUCTION_BCRYPT_ROUNDS = 10
MAKE_A_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"  # noqa: S105 (a command, not a secret)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

#: Values copied from tutorials and `.env.example`; production refuses them.
PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me",
        "changeme",
        "secret",
        "secret-key",
        "your-secret-key",
        "jwt-secret-key",
        "your-jwt-secret-key",
        "dev",
        "development",
        "super-secret",
    }
)


def require_writable_sqlite(url: str) -> None:
    """SQLite needs to write the file and, for its WAL and journal, the directory."""
    database = make_url(url).database or ""
    if database in ("", ":memory:"):
        raise ValueError("DATABASE_URL: an in-memory SQLite database is refused in production")
    path = Path(database)
    if not os.access(path.parent, os.W_OK | os.X_OK) or (
        path.exists() and not os.access(path, os.W_OK)
    ):
        raise ValueError(f"DATABASE_URL: SQLite path {path} is not writable")


def require_private_sqlite(url: str) -> None:
    """The database file (and its WAL and shared-memory files) readable by its owner only:
    it holds emails, password hashes and session addresses."""
    database = Path(make_url(url).database or "")
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if path.exists() and path.stat().st_mode & 0o077:
            mode = path.stat().st_mode & 0o777
            raise ValueError(
                f"DATABASE_URL: {path} is open to group or others (mode {mode:o}): chmod 600 {path}"
            )


def require_strong_secret(name: str, secret: SecretStr | None) -> None:
    variable = name.upper()
    if secret is None:
        raise ValueError(f"{variable}: required in production")
    value = secret.get_secret_value()
    if value.strip().lower() in PLACEHOLDER_SECRETS or value.startswith("change-me"):
        raise ValueError(f"{variable}: a placeholder value is refused in production")
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{variable}: must be at least {MIN_SECRET_BYTES} bytes in production")
    weakness = _guessable(value)
    if weakness:
        raise ValueError(
            f"{variable}: {weakness}, refused in production; make one: {MAKE_A_SECRET}"
        )


def _guessable(value: str) -> str | None:
    """Why a long secret is still guessable, or None."""
    lowered = value.lower()
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"fewer than {MIN_DISTINCT_CHARACTERS} distinct characters"
    if any(word in lowered for word in PLACEHOLDER_SECRETS if len(word) >= 6):
        return "it contains a placeholder"
    for start in range(len(value) - REPEATED_BLOCK + 1):
        if value.count(value[start : start + REPEATED_BLOCK]) >= 3:
            return "a block of it repeats"
    return None


def refuse_unsafe_knobs(settings: Settings) -> None:
    """Stop production start-up on a setting that makes the service unsafe."""
    if settings.bcrypt_rounds < MIN_PRODUCTION_BCRYPT_ROUNDS:
        raise ValueError(
            f"BCRYPT_ROUNDS: at least {MIN_PRODUCTION_BCRYPT_ROUNDS} in production "
            "(12 by default); a lower cost makes stolen hashes cheap to crack"
        )
    if "cookies" in settings.jwt_token_location and not settings.jwt_cookie_secure:
        raise ValueError(
            "JWT_COOKIE_SECURE: false is refused in production: the token cookies "
            "would be sent over plain HTTP"
        )
    if "cookies" in settings.jwt_token_location and not settings.jwt_cookie_csrf_protect:
        raise ValueError(
            "JWT_COOKIE_CSRF_PROTECT: false is refused in production with cookie "
            "transport: any site could make the browser send authenticated requests"
        )
    open_metrics = settings.metrics_enabled and settings.metrics_token is None
    if open_metrics and not binds_loopback(settings.host):
        raise ValueError(
            f"METRICS_TOKEN: required in production when /metrics is served on "
            f"{settings.host} (not a loopback address); set one, or bind 127.0.0.1"
        )


def production_warnings(settings: Settings) -> list[str]:
    """One line for each deliberate choice production allows but an operator should see."""
    warnings = []
    if not settings.rate_limit_enabled:
        warnings.append("RATE_LIMIT_ENABLED=false: logins and registrations are not limited")
    if settings.metrics_enabled and settings.metrics_token is None:
        warnings.append(f"METRICS_TOKEN unset: /metrics is open to anyone on {settings.host}")
    return warnings


def binds_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")
