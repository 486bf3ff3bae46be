"""Blueprint `pages`: the three pages that mailed links open (`mail.LINK_PAGES`).

Each is a small HTML page with a local script under a strict CSP. The token rides in the
URL's fragment, which the browser never sends: the script reads it, clears it from the
address bar and POSTs it to the API only when the user submits. A GET never consumes a
token (mail scanners follow links). Hidden from the OpenAPI document: they are not API.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, abort, render_template, send_from_directory
from quart_schema import hide

from ..mail import LINK_PAGES

ASSETS_DIR = Path(__file__).parent.parent / "static" / "pages"
ASSETS = frozenset({"link.js", "link.css"})

#: Nothing inline, nothing from another origin, no form that submits by itself.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
}

bp = Blueprint("pages", __name__)


@bp.get(LINK_PAGES["password_reset"])
@hide
async def reset_password() -> Response:
    return await _page("pages/reset_password.html")


@bp.get(LINK_PAGES["email_verify"])
@hide
async def verify_email() -> Response:
    return await _page("pages/verify_email.html")


@bp.get(LINK_PAGES["email_change"])
@hide
async def confirm_email_change() -> Response:
    return await _page("pages/confirm_email_change.html")


@bp.get("/pages/assets/<filename>")
@hide
async def asset(filename: str) -> Response:
    if filename not in ASSETS:
        abort(404)
    response = await send_from_directory(ASSETS_DIR, filename)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


async def _page(template: str) -> Response:
    response = Response(await render_template(template), mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    return response
