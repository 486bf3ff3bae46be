"""Quart Auth API: an async JWT authentication service.

`create_app()` is the application factory. The guards are public so that your own
routes are protected as they would be with Flask-JWT-Extended::

    from quart_auth_api import current_user, jwt_required
"""

from __future__ import annotations

import logging

from quart import Quart

from settings import Settings

from . import cli, cli_users, db, docs, errors, extensions, hooks, logs, metrics, ratelimit
from ._version import __version__
from .blueprints import register_blueprints
from .guards import (
    current_user,
    get_jwt,
    get_jwt_identity,
    jwt_required,
    verify_jwt_in_request,
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
    extensions.install(app, settings)
    logs.configure_logging(settings)
    for warning in settings.production_warnings():  # deliberate, and worth a line
        logging.getLogger("quart_auth_api").warning("production: %s", warning)
    hooks.init_app(app)
    errors.init_app(app)
    cli.init_app(app)  # before db: its background purge stops before the engine closes
    cli_users.init_app(app)
    db.init_app(app)
    docs.init_app(app)
    ratelimit.init_app(app)
    register_blueprints(app)
    metrics.init_app(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    return app
