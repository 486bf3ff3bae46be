"""OpenAPI document and Swagger UI served from local assets (never a CDN)."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Quart, Response, abort, send_from_directory, url_for
from quart_schema import QuartSchema, hide
from quart_schema.openapi import HttpSecurityScheme, Info, Tag
from swagger_ui_bundle import swagger_ui_path

from . import __version__

SWAGGER_ASSETS = frozenset(
    {
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-ui.css",
        "favicon-32x32.png",
    }
)
STATIC_DIR = Path(__file__).parent / "static"

#: Swagger UI needs inline styles (React style attributes) and data: images; nothing leaves
#: the origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Quart Auth API: documentation</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon}">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
  <script src="{bundle}"></script>
  <script src="{preset}"></script>
  <script src="{init}"></script>
</body>
</html>
"""

bp = Blueprint("docs", __name__)


def init_app(app: Quart) -> None:
    enabled = app.extensions["settings"].docs_enabled
    QuartSchema(
        app,
        openapi_path="/openapi.json" if enabled else None,
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(
            title="Quart Auth API",
            version=__version__,
            description=(
                "JWT authentication: register, log in, refresh with rotation, log out with "
                "immediate revocation. Errors are RFC 9457 problem documents."
            ),
        ),
        tags=[
            Tag(name="auth", description="Accounts, tokens and sessions."),
            Tag(name="main", description="Service information and health."),
        ],
        security_schemes={"bearer": HttpSecurityScheme(scheme="bearer", bearer_format="JWT")},
    )
    if enabled:
        app.register_blueprint(bp)


@bp.get("/docs")
@hide
async def swagger_page() -> Response:
    html = DOCS_PAGE.format(
        css=url_for("docs.asset", filename="swagger-ui.css"),
        icon=url_for("docs.asset", filename="favicon-32x32.png"),
        bundle=url_for("docs.asset", filename="swagger-ui-bundle.js"),
        preset=url_for("docs.asset", filename="swagger-ui-standalone-preset.js"),
        init=url_for("docs.asset", filename="swagger-init.js"),
        openapi=url_for("openapi"),
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@bp.get("/docs/assets/<filename>")
@hide
async def asset(filename: str) -> Response:
    if filename == "swagger-init.js":
        response = await send_from_directory(STATIC_DIR, filename)
    elif filename in SWAGGER_ASSETS:
        response = await send_from_directory(Path(str(swagger_ui_path)), filename)
    else:
        abort(404)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response
