"""Tokens going out: `issue_tokens()` mints them and builds the body; with cookie
transport, the cookies and their double-submit CSRF values (`guards.py` is how tokens
come in).

Cookies have Flask-JWT-Extended's names. With `JWT_TOKEN_LOCATION` including
`cookies`, login, registration and refresh set four cookies and logout clears them:

- `access_token_cookie` (path `/`) and `refresh_token_cookie` (path `/auth/refresh`):
  HttpOnly, SameSite (`JWT_COOKIE_SAMESITE`, Lax by default), Secure in production;
- `csrf_access_token` and `csrf_refresh_token`, both at path `/` so that the page's
  JavaScript can read them, whose value the token also carries as its `csrf` claim.

With cookies as the only transport, the token body carries no token at all: HttpOnly
is the point, and page script never holds one. A state-changing request (not GET, HEAD
or OPTIONS) that authenticates by cookie must send the CSRF value back in the
`X-CSRF-TOKEN` header (`csrf_failed` otherwise).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from quart import Response, after_this_request, request
from werkzeug.wrappers import Response as WerkzeugResponse

from . import extensions
from .audit import audit
from .crypto.tokens import ACCESS, REFRESH, mint_token
from .models import utcnow
from .schemas import PublicUser, TokenOut, UserOut

AnyResponse = Response | WerkzeugResponse

ACCESS_COOKIE = "access_token_cookie"
REFRESH_COOKIE = "refresh_token_cookie"
ACCESS_CSRF_COOKIE = "csrf_access_token"
REFRESH_CSRF_COOKIE = "csrf_refresh_token"
CSRF_HEADER = "X-CSRF-TOKEN"
REFRESH_PATH = "/auth/refresh"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class CookieTokens:
    """What one token body puts into cookies."""

    access_token: str
    refresh_token: str
    access_csrf: str
    refresh_csrf: str


def cookies_enabled() -> bool:
    return "cookies" in extensions.settings().jwt_token_location


def headers_enabled() -> bool:
    return "headers" in extensions.settings().jwt_token_location


def new_csrf_value() -> str:
    return secrets.token_urlsafe(24)


def cookie_token(*, refresh: bool) -> str | None:
    """The token from its cookie, when cookies are a transport here."""
    if not cookies_enabled():
        return None
    return request.cookies.get(REFRESH_COOKIE if refresh else ACCESS_COOKIE) or None


def csrf_ok(claims: dict[str, Any]) -> bool:
    """Double-submit check for a cookie-authenticated, state-changing request."""
    if request.method in SAFE_METHODS or not extensions.settings().jwt_cookie_csrf_protect:
        return True
    sent = request.headers.get(CSRF_HEADER, "")
    expected = claims.get("csrf")
    if not sent or not isinstance(expected, str):
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


#: name -> (path, HttpOnly): the one description of the four cookies.
#: Both CSRF cookies at `/`, so that the page's script can read the refresh one too
#: (Flask-JWT-Extended's default); the refresh token itself only goes to /auth/refresh.
COOKIES: dict[str, tuple[str, bool]] = {
    ACCESS_COOKIE: ("/", True),
    REFRESH_COOKIE: (REFRESH_PATH, True),
    ACCESS_CSRF_COOKIE: ("/", False),
    REFRESH_CSRF_COOKIE: ("/", False),
}


def set_token_cookies(tokens: CookieTokens) -> None:
    """Set the four cookies on this request's response."""
    rules = extensions.token_rules()
    access_age = int(rules.access_ttl.total_seconds())
    refresh_age = int(rules.refresh_ttl.total_seconds())
    _write_cookies(
        {
            ACCESS_COOKIE: (tokens.access_token, access_age),
            REFRESH_COOKIE: (tokens.refresh_token, refresh_age),
            ACCESS_CSRF_COOKIE: (tokens.access_csrf, access_age),
            REFRESH_CSRF_COOKIE: (tokens.refresh_csrf, refresh_age),
        }
    )


def unset_token_cookies() -> None:
    """Expire the four cookies on this request's response."""
    _write_cookies(None)


def _write_cookies(values: dict[str, tuple[str, int]] | None) -> None:
    """Set the cookies to `values` (value, max age), or expire them all when None."""
    settings = extensions.settings()

    @after_this_request
    async def _write(response: AnyResponse) -> AnyResponse:
        secure, samesite = bool(settings.jwt_cookie_secure), settings.jwt_cookie_samesite
        for name, (path, http_only) in COOKIES.items():
            if values is None:
                response.delete_cookie(
                    name, path=path, secure=secure, httponly=http_only, samesite=samesite
                )
            else:
                value, max_age = values[name]
                response.set_cookie(
                    name,
                    value,
                    max_age=max_age,
                    path=path,
                    secure=secure,
                    httponly=http_only,
                    samesite=samesite,
                )
        return response


def issue_tokens(
    user: PublicUser,
    session_id: uuid.UUID,
    *,
    generation: int,
    fresh: bool,
    event: str,
    amr: tuple[str, ...] = ("pwd",),
) -> TokenOut:
    """Mint an access and a refresh token for a session authenticated by `amr`, log
    `event`, set the cookies (cookie transport), build the body."""
    audit(event, user=user.public_id, sid=session_id, gen=generation)
    rules = extensions.token_rules()
    now = utcnow()
    subject, sid = str(user.public_id), str(session_id)
    cookies = cookies_enabled()
    access_csrf, refresh_csrf = (new_csrf_value(), new_csrf_value()) if cookies else (None, None)
    mint = partial(mint_token, rules, subject=subject, session_id=sid, now=now)
    access = mint(token_type=ACCESS, fresh=fresh, csrf=access_csrf, amr=amr)
    refresh = mint(token_type=REFRESH, generation=generation, csrf=refresh_csrf)
    if access_csrf and refresh_csrf:
        set_token_cookies(CookieTokens(access.token, refresh.token, access_csrf, refresh_csrf))
    in_body = headers_enabled()  # cookies alone: page script never holds a token
    return TokenOut(
        user=UserOut.of(user),
        access_token=access.token if in_body else None,
        refresh_token=refresh.token if in_body else None,
        expires_in=int(rules.access_ttl.total_seconds()),
    )
