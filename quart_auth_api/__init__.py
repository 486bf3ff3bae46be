"""Quart Auth API: an async JWT authentication service.

`create_app()` is the application factory. The guards are public so that your own
routes are protected as they would be with Flask-JWT-Extended::

    from quart_auth_api import current_user, jwt_required
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quart import Quart

from settings import ConfigError, Settings

__version__ = "0.1.0"

from .guards import (  # noqa: E402  (after __version__, which docs and main import)
    current_user,
    get_jwt,
    get_jwt_identity,
    jwt_required,
    verify_jwt_in_request,
)
from .passwords import PasswordHasher  # noqa: E402
from .security import (  # noqa: E402
    HMAC_ALGORITHMS,
    InvalidKey,
    JwtKey,
    TokenKeys,
    hmac_key,
    private_key,
    public_key,
    read_key_file,
)

__all__ = [
    "__version__",
    "create_app",
    "current_user",
    "get_jwt",
    "get_jwt_identity",
    "jwt_required",
    "verify_jwt_in_request",
]


def create_app(config: Settings | None = None) -> Quart:
    """Build the app from `config` (default: the environment, via `Settings.load()`)."""
    from . import cli, db, docs, errors, hooks, logs, metrics, ratelimit
    from .blueprints import register_blueprints

    settings = config or Settings.load()
    app = Quart(__name__, static_folder=None)
    app.config.update(
        SECRET_KEY=settings.secret_key.get_secret_value(),
        MAX_CONTENT_LENGTH=settings.max_content_length,
        DEBUG=settings.debug,
        TESTING=settings.env == "testing",
        PROPAGATE_EXCEPTIONS=False,
        JSON_SORT_KEYS=False,
    )
    app.extensions["settings"] = settings
    app.extensions["token_keys"] = token_keys(settings)
    logs.configure_logging(settings)
    _init_hasher(app, settings)
    hooks.init_app(app)
    errors.init_app(app)
    cli.init_app(app)  # before db: its background purge stops before the engine closes
    db.init_app(app)
    docs.init_app(app)
    ratelimit.init_app(app)
    register_blueprints(app)
    metrics.init_app(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    return app


def token_keys(settings: Settings) -> TokenKeys:
    """The key set: the active signing key and the retired keys that still verify.

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
    return TokenKeys(
        signing_key=signing,
        verification_keys=tuple(retired),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.jwt_access_token_expires,
        refresh_ttl=settings.jwt_refresh_token_expires,
    )


@contextmanager
def _refused_as(variable: str, path: Path | None = None) -> Iterator[None]:
    """An unusable key as `config error: VARIABLE: [file: ]why`, one line."""
    try:
        yield
    except InvalidKey as error:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"config error: {variable}: {where}{error}") from None


def _init_hasher(app: Quart, settings: Settings) -> None:
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, threads=settings.bcrypt_threads)
    app.extensions["hasher"] = hasher
    app.before_serving(hasher.warm_up)

    @app.after_serving
    async def _close_hasher() -> None:
        hasher.close()
