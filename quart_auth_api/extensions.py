"""What `create_app` builds from settings, and the typed getters for it.

`install()` reads the settings once into the objects the package works with: the
token rules (keys, claims and lifetimes), the password hasher, the sealer of TOTP
secrets. Modules read them with `settings()`, `token_rules()`, `hasher()`,
`digest_key()` and `sealer()`; what a module opens only while serving (the database,
the rate limiter) lives in a typed `Slot` that the module declares.
No other module uses a string key into `app.extensions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from quart import Quart, current_app

from settings import ConfigError, Settings

from .crypto.digests import ACCOUNT_DIGEST, MFA_SEALING, derive_key
from .crypto.keys import (
    HMAC_ALGORITHMS,
    InvalidKey,
    JwtKey,
    KeySet,
    hmac_key,
    private_key,
    public_key,
    read_key_file,
)
from .crypto.passwords import PasswordHasher
from .crypto.sealing import InvalidSealingKey, Sealer, checked_key, fernet_key
from .crypto.tokens import TokenRules

#: The one key of this package in `app.extensions`.
KEY = "quart_auth_api"

T = TypeVar("T")


@dataclass
class Extensions:
    settings: Settings
    tokens: TokenRules
    hasher: PasswordHasher
    #: The key of the account digests in log lines and rate-limit keys.
    digest_key: bytes
    #: Seals and opens the TOTP secrets.
    sealer: Sealer
    #: What the modules' slots hold while serving.
    serving: dict[Slot[Any], Any] = field(default_factory=dict)


class Slot(Generic[T]):
    """One object a module opens while serving, e.g. `DATABASE: Slot[Database]`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def put(self, app: Quart, value: T) -> None:
        of(app).serving[self] = value

    def pop(self, app: Quart) -> T | None:
        value: T | None = of(app).serving.pop(self, None)
        return value

    def find(self, app: Quart | None = None) -> T | None:
        value: T | None = of(app).serving.get(self)
        return value

    def get(self, app: Quart | None = None) -> T:
        value = self.find(app)
        if value is None:
            raise RuntimeError(
                f"the {self.name} is not open: run the app with its serving hooks "
                "(app.test_app() in tests)"
            )
        return value

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"


def install(app: Quart, settings: Settings) -> Extensions:
    """Build everything settings describe, once; the hasher's threads start and stop
    with serving."""
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, threads=settings.bcrypt_threads)
    digest_key = derive_key(settings.secret_key.get_secret_value(), ACCOUNT_DIGEST)
    extensions = Extensions(
        settings, build_token_rules(settings), hasher, digest_key, build_sealer(settings)
    )
    app.extensions[KEY] = extensions
    app.before_serving(hasher.warm_up)

    @app.after_serving
    async def _close_hasher() -> None:
        hasher.close()

    return extensions


def of(app: Quart | None = None) -> Extensions:
    """This package's objects for `app` (default: the current app)."""
    extensions: Extensions = (current_app if app is None else app).extensions[KEY]
    return extensions


def settings(app: Quart | None = None) -> Settings:
    return of(app).settings


def token_rules(app: Quart | None = None) -> TokenRules:
    return of(app).tokens


def hasher(app: Quart | None = None) -> PasswordHasher:
    return of(app).hasher


def digest_key(app: Quart | None = None) -> bytes:
    return of(app).digest_key


def sealer(app: Quart | None = None) -> Sealer:
    return of(app).sealer


def mail_enabled(app: Quart | None = None) -> bool:
    """Whether mail is sent (MAIL_BACKEND is not `none`)."""
    return of(app).settings.mail_backend != "none"


def build_token_rules(settings: Settings) -> TokenRules:
    """The key set and the claims every token is checked against.

    Key files are read here, once, at start-up. A secret or key that cannot be used
    stops start-up with one line naming its variable. Retired HMAC secrets keep the
    HMAC algorithm in force (HS256 under RS256/ES256: the way out of the default).
    """
    algorithm = settings.jwt_algorithm
    if algorithm in HMAC_ALGORITHMS:
        with _refused_as("JWT_SECRET_KEY"):
            signing = hmac_key(settings.jwt_secret_key.get_secret_value(), algorithm)
    else:
        path = settings.jwt_private_key_file
        with _refused_as("JWT_PRIVATE_KEY_FILE", path):
            if path is None:
                raise InvalidKey(f"required for {algorithm}")
            signing = private_key(read_key_file(path), algorithm)
    retired_hmac = algorithm if algorithm in HMAC_ALGORITHMS else "HS256"
    retired: list[JwtKey] = []
    with _refused_as("JWT_SECRET_KEY_FALLBACKS"):
        retired += (hmac_key(secret, retired_hmac) for secret in settings.jwt_secret_key_fallbacks)
    for name in settings.jwt_public_key_fallback_files:
        with _refused_as("JWT_PUBLIC_KEY_FALLBACK_FILES", Path(name)):
            retired.append(public_key(read_key_file(Path(name))))
    with _refused_as("JWT_SECRET_KEY"):  # jose's own refusal of an HMAC secret
        return TokenRules(
            keys=KeySet(signing_key=signing, verification_keys=tuple(retired)),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl=settings.jwt_access_token_expires,
            refresh_ttl=settings.jwt_refresh_token_expires,
        )


def build_sealer(settings: Settings) -> Sealer:
    """The TOTP secrets' keys: MFA_ENCRYPTION_KEY (or, unset, a key derived from
    SECRET_KEY) seals; it, MFA_ENCRYPTION_KEY_FALLBACKS and the key derived from
    SECRET_KEY open, so that setting MFA_ENCRYPTION_KEY on a server that ran without it
    loses no factor (each is sealed anew at its next accepted code)."""
    derived = fernet_key(derive_key(settings.secret_key.get_secret_value(), MFA_SEALING))
    keys: list[bytes] = []
    if settings.mfa_encryption_key is not None:
        with _refused_as("MFA_ENCRYPTION_KEY"):
            keys.append(checked_key(settings.mfa_encryption_key.get_secret_value()))
    with _refused_as("MFA_ENCRYPTION_KEY_FALLBACKS"):
        keys += (checked_key(key) for key in settings.mfa_encryption_key_fallbacks)
    if settings.mfa_encryption_key is None:
        keys.insert(0, derived)
    elif derived not in keys:
        keys.append(derived)
    return Sealer(keys)


@contextmanager
def _refused_as(variable: str, path: Path | None = None) -> Iterator[None]:
    """An unusable key as `config error: VARIABLE: [file: ]why`, one line."""
    try:
        yield
    except (InvalidKey, InvalidSealingKey) as error:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"config error: {variable}: {where}{error}") from None
