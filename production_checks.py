"""What production refuses, and what it warns about: checks of settings' values.

`settings.py` calls them while it validates; they read nothing from the environment
themselves. Each refusal is a `ValueError` whose message starts with the variable, so
that start-up stops with one line naming it.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr
from sqlalchemy.engine import make_url


class Settings(Protocol):
    """What these checks read of `settings.Settings` (which imports this module)."""

    @property
    def bcrypt_rounds(self) -> int: ...
    @property
    def frontend_url(self) -> str: ...
    @property
    def jwt_token_location(self) -> tuple[str, ...]: ...
    @property
    def jwt_cookie_secure(self) -> bool | None: ...
    @property
    def jwt_cookie_csrf_protect(self) -> bool: ...
    @property
    def metrics_enabled(self) -> bool: ...
    @property
    def metrics_token(self) -> SecretStr | None: ...
    @property
    def rate_limit_enabled(self) -> bool: ...
    @property
    def mail_backend(self) -> str | None: ...


MIN_SECRET_BYTES = 32
#: What makes a long secret guessable all the same: few distinct characters, a block of
#: REPEATED_BLOCK characters found twice, SEQUENCE characters in a row up or down the
#: alphabet (`abcdefgh`, `98765432`), KEYBOARD_RUN keys of a keyboard row.
MIN_DISTINCT_CHARACTERS = 8
REPEATED_BLOCK = 8
SEQUENCE = 8
KEYBOARD_RUN = 6
KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")  # digits: SEQUENCE covers them
MIN_PRODUCTION_BCRYPT_ROUNDS = 10
MAKE_A_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"  # noqa: S105 (a command, not a secret)

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
        "password",
        "testing-only",  # the public secrets of Settings.for_testing()
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
    folder = database.parent
    if folder.is_dir() and folder.stat().st_mode & 0o022:
        mode = folder.stat().st_mode & 0o777
        raise ValueError(
            f"DATABASE_URL: {folder} is writable by group or others (mode {mode:o}), who could "
            f"plant the WAL file or swap the database: chmod 700 {folder}"
        )
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
    """Why a long secret is still guessable, or None (read as NFKC, so that full-width
    or otherwise decorated letters count as the letters they show)."""
    text = unicodedata.normalize("NFKC", value)
    lowered = text.casefold()
    if len(set(text)) < MIN_DISTINCT_CHARACTERS:
        return f"fewer than {MIN_DISTINCT_CHARACTERS} distinct characters"
    if any(word in lowered for word in PLACEHOLDER_SECRETS if len(word) >= 6):
        return "it contains a placeholder"
    blocks = [text[start : start + REPEATED_BLOCK] for start in range(len(text))]
    if len(set(blocks[: len(text) - REPEATED_BLOCK + 1])) < len(text) - REPEATED_BLOCK + 1:
        return "a block of it repeats"
    if _has_sequence(lowered) or _has_keyboard_run(lowered):
        return "it holds a run of characters in a row"
    return None


def _has_sequence(text: str) -> bool:
    """SEQUENCE characters whose code points go up (or down) by one each."""
    for step in (1, -1):
        run = 1
        for before, after in zip(text, text[1:], strict=False):
            run = run + 1 if ord(after) - ord(before) == step else 1
            if run >= SEQUENCE:
                return True
    return False


def _has_keyboard_run(text: str) -> bool:
    for row in KEYBOARD_ROWS:
        for line in (row, row[::-1]):
            if any(line[i : i + KEYBOARD_RUN] in text for i in range(len(line) - KEYBOARD_RUN + 1)):
                return True
    return False


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
    if settings.metrics_enabled and settings.metrics_token is None:
        # HOST does not say where it is served (`hypercorn --bind 0.0.0.0 run:app`)
        raise ValueError(
            "METRICS_TOKEN: required in production when METRICS_ENABLED=true; give the "
            "scraper the token (make one with the command above for a secret)"
        )


def production_warnings(settings: Settings) -> list[str]:
    """One line for each deliberate choice production allows but an operator should see."""
    warnings = []
    if not settings.rate_limit_enabled:
        warnings.append("RATE_LIMIT_ENABLED=false: logins and registrations are not limited")
    if settings.mail_backend == "none":
        warnings.append("MAIL_BACKEND=none: no mail is sent (set MAIL_BACKEND=smtp)")
    elif settings.frontend_url.startswith("http://"):
        warnings.append("FRONTEND_URL is http://: the links in mail travel unencrypted")
    return warnings
