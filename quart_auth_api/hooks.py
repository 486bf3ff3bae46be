"""Per-request cross-cutting work: request id, body guards, headers, access log."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel
from quart import Quart, Response, current_app, g, request
from quart.sessions import SessionInterface, SessionMixin
from quart.wrappers import BaseRequestWebsocket, Request
from quart_cors import cors
from quart_schema import validate_request
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE

from . import extensions
from .errors import InvalidJson, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

access_log = logging.getLogger("quart_auth_api.access")

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{8,128}")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: What a path keeps unquoted in the text access line (RFC 3986 pchar and "/").
PATH_SAFE = "/:@!$&'()*+,;=-._~"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=63072000; includeSubDomains"
#: Added to every answer unless the view set them: security headers, and no caching.
DEFAULT_HEADERS = (*SECURITY_HEADERS.items(), ("Cache-Control", "no-store"))
PRODUCTION_HEADERS = (*DEFAULT_HEADERS, ("Strict-Transport-Security", HSTS))


class ApiRequest(Request):
    """A request whose undecodable JSON is our 400 problem, never framework text."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        try:
            return await super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:  # valid JSON nested deeper than the parser's stack
            raise InvalidJson("The request body is nested too deeply.") from None
        except UnicodeDecodeError:  # JSON must be UTF-8 (RFC 8259)
            raise InvalidJson("The request body is not valid UTF-8.") from None

    def on_json_loading_failed(self, error: Exception) -> None:
        raise InvalidJson()


class NoSession(SessionInterface):
    """The API keeps no session: its tokens carry the state. Quart's default would open
    (and save) a signed cookie session on every request, a twentieth of a `GET
    /auth/me`; here `session` is always Quart's empty null session."""

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> None:
        return None

    async def save_session(self, app: Quart, session: SessionMixin, response: Any) -> None:
        return None


CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "X-CSRF-TOKEN", "X-Request-ID")
CORS_EXPOSE_HEADERS = ("X-Request-ID", "Retry-After", "WWW-Authenticate")


def init_app(app: Quart) -> None:
    app.request_class = ApiRequest
    app.session_interface = NoSession()  # type: ignore[assignment]  # Quart types its default
    app.before_request(_start)
    app.before_request(_require_json_body)
    app.after_request(_finish)
    settings = extensions.settings(app)
    if settings.cors_origins:  # none listed: no CORS header at all, browsers refuse
        cors(
            app,
            allow_origin=list(settings.cors_origins),
            allow_credentials="cookies" in settings.jwt_token_location,
            allow_headers=CORS_ALLOW_HEADERS,
            allow_methods=("GET", "POST"),
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=600,
        )


async def _start() -> None:
    # getlist: werkzeug's get() raises and catches an exception for a missing header
    incoming = request.headers.getlist("X-Request-ID")
    valid = len(incoming) == 1 and REQUEST_ID_RE.fullmatch(incoming[0])
    g.request_id = incoming[0] if valid else new_request_id()
    g.started = time.perf_counter()


def new_request_id() -> str:
    """32 random hex digits (as many as a UUID4's hex form, without building one)."""
    return os.urandom(16).hex()


async def _require_json_body() -> None:
    """415 for a body that is not JSON at all, on routes that take a JSON body (a route
    whose body is optional also takes none)."""
    if request.method not in BODY_METHODS or request.url_rule is None:
        return
    view = current_app.view_functions.get(request.url_rule.endpoint)
    if view is None or not hasattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE) or request.is_json:
        return
    if not (hasattr(view, OPTIONAL_BODY_ATTRIBUTE) and await _no_body()):
        raise UnsupportedMediaType()


#: Set on a view whose JSON body may be left out (`optional_body`).
OPTIONAL_BODY_ATTRIBUTE = "_quart_auth_api_optional_body"


def optional_body(
    model: type[M],
) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """`validate_request(model)` for a body a client may leave out: a request with an
    empty body gets `model()`, its defaults."""

    def decorator(view: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        validated = validate_request(model)(view)

        @wraps(validated)
        async def wrapper(*args: Any, **kwargs: Any) -> R:
            if await _no_body():
                return await view(*args, data=model(), **kwargs)
            result: R = await validated(*args, **kwargs)
            return result

        setattr(wrapper, OPTIONAL_BODY_ATTRIBUTE, True)
        return wrapper

    return decorator


async def _no_body() -> bool:
    """An empty body, whatever its Content-Type says (`fetch` with JSON headers and no
    body sends `Content-Type: application/json` and `Content-Length: 0`); without a
    length (chunked, HTTP/2), the body itself is read (and kept for the validation)."""
    if request.content_length is not None:
        return request.content_length == 0
    return not await request.get_data(cache=True)


#: A run of characters as long as a secret (a link token is 43 URL-safe characters).
SECRET_LIKE = re.compile(r"[A-Za-z0-9_=-]{32,}")


def _redacted(path: str) -> str:
    """A path no route matched, as logged: a link token pasted into one
    (`/reset-password/<token>`) must not reach the log, so long runs are cut out."""
    return SECRET_LIKE.sub("…", path)


async def _finish(response: Response) -> Response:
    settings = extensions.settings()
    request_id = g.get("request_id") or new_request_id()
    headers = response.headers
    headers["X-Request-ID"] = request_id
    # one pass over what the view set (werkzeug's setdefault raises and catches an
    # exception for every header it does not find: a twentieth of a GET /auth/me)
    present = {name.lower() for name in headers.keys()}  # noqa: SIM118  (Headers)
    defaults = PRODUCTION_HEADERS if settings.is_production else DEFAULT_HEADERS
    headers.extend([(name, value) for name, value in defaults if name.lower() not in present])
    if not access_log.isEnabledFor(logging.INFO):
        return response
    duration_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
    path = request.path if request.url_rule is not None else _redacted(request.path)
    access_log.info(
        "%s %s %s %.1fms",
        request.method,
        quote(path, safe=PATH_SAFE),  # as on the wire: no space can add a field
        response.status_code,
        duration_ms,
        extra={
            "method": request.method,
            "path": path,
            "status": response.status_code,
            "duration_ms": round(duration_ms, 2),
        },
    )
    return response
