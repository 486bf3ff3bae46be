"""The one list of blueprints."""

from __future__ import annotations

from quart import Quart

from . import auth, main, wellknown

BLUEPRINTS = (main.bp, auth.bp, wellknown.bp)


def register_blueprints(app: Quart) -> None:
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
