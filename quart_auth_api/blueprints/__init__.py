"""The one list of blueprints, each with the condition under which it is served."""

from __future__ import annotations

from collections.abc import Callable

from quart import Blueprint, Quart

from settings import Settings

from .. import extensions
from . import account, auth, docs, main, metrics, mfa, pages, sessions, wellknown

#: (blueprint, served when): `/docs` with DOCS_ENABLED, `/metrics` with METRICS_ENABLED.
BLUEPRINTS: tuple[tuple[Blueprint, Callable[[Settings], bool]], ...] = (
    (main.bp, lambda settings: True),
    (auth.bp, lambda settings: True),
    (account.bp, lambda settings: True),
    (sessions.bp, lambda settings: True),
    (mfa.bp, lambda settings: True),
    (pages.bp, lambda settings: True),
    (wellknown.bp, lambda settings: True),
    (docs.bp, lambda settings: settings.docs_enabled),
    (metrics.bp, lambda settings: settings.metrics_enabled),
)


def register_blueprints(app: Quart) -> None:
    settings = extensions.settings(app)
    for blueprint, served in BLUEPRINTS:
        if served(settings):
            app.register_blueprint(blueprint)
