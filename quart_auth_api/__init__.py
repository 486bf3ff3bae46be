"""Quart Auth API: an async JWT authentication service.

`create_app()` is the application factory. The guards are public so that your own
routes are protected as they would be with Flask-JWT-Extended::

    from quart_auth_api import current_user, jwt_required
"""

from __future__ import annotations

from quart import Quart

from settings import Settings

__version__ = "0.1.0"

from .guards import (  # noqa: E402  (after __version__, which docs and main import)
    current_user,
    get_jwt,
    get_jwt_identity,
    jwt_required,
    verify_jwt_in_request,
)
from .security import PasswordHasher, TokenKeys  # noqa: E402

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
    from . import cli, db, docs, errors, hooks, logs, metrics
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
    db.init_app(app)
    docs.init_app(app)
    register_blueprints(app)
    cli.init_app(app)
    metrics.init_app(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    return app


def token_keys(settings: Settings) -> TokenKeys:
    return TokenKeys(
        secret=settings.jwt_secret_key.get_secret_value(),
        algorithm=settings.jwt_algorithm,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.jwt_access_token_expires,
        refresh_ttl=settings.jwt_refresh_token_expires,
    )


def _init_hasher(app: Quart, settings: Settings) -> None:
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, threads=settings.bcrypt_threads)
    app.extensions["hasher"] = hasher

    @app.after_serving
    async def _close_hasher() -> None:
        hasher.close()
