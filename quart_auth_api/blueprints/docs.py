"""Blueprint `docs`: Swagger UI at `/docs`, served from local assets (never a CDN)."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, abort, send_from_directory, url_for
from quart_schema import hide

SWAGGER_DIR = Path(__file__).parent.parent / "static" / "swagger-ui"
SWAGGER_ASSETS = frozenset(
    {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-init.js",
        "favicon-32x32.png",
    }
)

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
  <script src="{init}"></script>
</body>
</html>
"""

bp = Blueprint("docs", __name__)


@bp.get("/docs")
@hide
async def swagger_page() -> Response:
    html = DOCS_PAGE.format(
        css=url_for("docs.asset", filename="swagger-ui.css"),
        icon=url_for("docs.asset", filename="favicon-32x32.png"),
        bundle=url_for("docs.asset", filename="swagger-ui-bundle.js"),
        init=url_for("docs.asset", filename="swagger-init.js"),
        openapi=url_for("openapi"),
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@bp.get("/docs/assets/<filename>")
@hide
async def asset(filename: str) -> Response:
    if filename not in SWAGGER_ASSETS:
        abort(404)
    response = await send_from_directory(SWAGGER_DIR, filename)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response
