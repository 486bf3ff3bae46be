"""Blueprint `main`: service information and health."""

from __future__ import annotations

from quart import Blueprint, redirect, request
from quart_schema import tag_blueprint, validate_response
from werkzeug.wrappers import Response

from .. import extensions
from .._version import __version__
from ..db import get_db, ping
from ..docs import documents_errors, documents_response
from ..errors import ServiceUnavailable
from ..schemas import IndexOut, StatusOut

bp = Blueprint("main", __name__)
tag_blueprint(bp, ["main"])


@bp.get("/")
@documents_response(302, "A browser (`Accept` prefers `text/html`) is redirected to `/docs`.")
@validate_response(IndexOut)
async def index() -> IndexOut | Response:
    """Describe the service.

    API clients get its name, version and where the documentation lives; a browser
    (an `Accept` header that prefers `text/html`) is redirected to `/docs`.
    """
    docs = extensions.settings().docs_enabled
    if docs and request.accept_mimetypes.best_match(["application/json", "text/html"]) == (
        "text/html"
    ):
        return redirect("/docs", 302)
    return IndexOut(
        name="quart-auth-api",
        version=__version__,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )


@bp.get("/healthz")
@validate_response(StatusOut)
async def healthz() -> StatusOut:
    """Liveness: the process answers.

    Never touches the database, so an outage does not get healthy workers restarted.
    """
    return StatusOut()


@bp.get("/readyz")
@documents_errors(ServiceUnavailable)
@validate_response(StatusOut)
async def readyz() -> StatusOut:
    """Readiness: the database answers.

    A 503 problem (`service_unavailable`) when it does not, so a load balancer stops
    routing here until it is back.
    """
    if not await ping(get_db()):
        raise ServiceUnavailable()
    return StatusOut()
