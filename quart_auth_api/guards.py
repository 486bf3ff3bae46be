"""Route guards in the style of Flask-JWT-Extended.

`bearer_token()` is the one parser of the `Authorization` header, and
`jwt_required()` the way a token comes in (with cookie transport, also from the
token cookies through `transport.py`). It verifies the
token (signature, algorithm, claims, type, freshness) and then checks, with one
indexed query, that the token's session is live and its user active, so a
logout or a revocation takes effect at once in every worker. `aal2=True` also needs
a session that passed the second factor: the session's row says so, not the token's
`aal` claim alone.

    from quart_auth_api import current_user, get_jwt, jwt_required

    @bp.get("/reports")
    @jwt_required()
    async def reports():
        return {"owner": current_user.email, "session": get_jwt()["sid"]}

    @bp.post("/payouts")
    @jwt_required(fresh=True, aal2=True)    # a password just now, and a TOTP code
    async def payout(): ...
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast

from quart import g, request
from quart_schema.openapi import QUART_SCHEMA_SECURITY_ATTRIBUTE
from werkzeug.local import LocalProxy

from . import extensions
from .crypto import tokens
from .errors import (
    Aal2Required,
    CsrfFailed,
    FreshTokenRequired,
    MfaRequired,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenRevoked,
    WrongTokenType,
)
from .services.mfa import factor_committed
from .services.sessions import CurrentUser, LiveSession, load_live_session
from .transport import cookie_token, csrf_ok, headers_enabled

P = ParamSpec("P")
R = TypeVar("R")

#: The OpenAPI security requirement `jwt_required` adds to a route.
BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
#: What `jwt_required` asks for, read by the OpenAPI document.
JWT_REQUIRED_ATTRIBUTE = "_quart_auth_api_jwt_required"
#: Set by `aal2_if_enrolled`, read by the OpenAPI document.
STEP_UP_ATTRIBUTE = "_quart_auth_api_aal2_if_enrolled"


def jwt_required(
    *, refresh: bool = False, fresh: bool = False, optional: bool = False, aal2: bool = False
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Protect a view: a valid access token (or refresh token with `refresh=True`).

    `fresh=True` also needs an access token minted by a password check (login or
    registration), not by a refresh. `aal2=True` needs an access token of a session
    that passed the second factor (TOTP or a recovery code): 403 `aal2_required`, or
    `mfa_required` for a user with no factor. `optional=True` lets a request without
    any token through (then `current_user` is None), but a bad token is still a 401.
    """

    def decorator(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(view)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            await verify_jwt_in_request(refresh=refresh, fresh=fresh, optional=optional, aal2=aal2)
            return await view(*args, **kwargs)

        security = [{}, *BEARER_SECURITY] if optional else BEARER_SECURITY
        setattr(wrapper, QUART_SCHEMA_SECURITY_ATTRIBUTE, security)
        setattr(
            wrapper,
            JWT_REQUIRED_ATTRIBUTE,
            {"refresh": refresh, "fresh": fresh, "optional": optional, "aal2": aal2},
        )
        return wrapper

    return decorator


def aal2_if_enrolled(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Below `jwt_required()`: a user who has a second factor needs an `aal2` session
    here (403 `aal2_required`); a user without one passes (a stolen password must not
    be enough to change the credentials that would lock the owner out)."""

    @wraps(view)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        await check_aal2_if_enrolled()
        return await view(*args, **kwargs)

    setattr(wrapper, STEP_UP_ATTRIBUTE, True)
    return wrapper


async def check_aal2_if_enrolled() -> None:
    """What `aal2_if_enrolled` checks, for a view that needs it only sometimes."""
    await _require_aal2(get_jwt(), get_live_session(), unless_no_factor=True)


async def _require_aal2(
    claims: dict[str, Any], live: LiveSession, *, unless_no_factor: bool
) -> None:
    """The token says aal2 and so does its session's row (a claim alone proves nothing
    the session did not do); otherwise `Aal2Required` for a user with a factor, and for
    one without, `MfaRequired` (or nothing, `unless_no_factor`)."""
    if claims.get("aal") == tokens.AAL2 and live.aal == tokens.AAL2:
        return
    if await factor_committed(user_id=live.user.id):
        raise Aal2Required(user=live.user.public_id, sid=live.session_id)
    if not unless_no_factor:
        raise MfaRequired(user=live.user.public_id, sid=live.session_id)


async def verify_jwt_in_request(
    *, refresh: bool = False, fresh: bool = False, optional: bool = False, aal2: bool = False
) -> None:
    """What `jwt_required` does, callable from a view or a hook."""
    token = bearer_token() if headers_enabled() else None
    by_cookie = token is None and (token := cookie_token(refresh=refresh)) is not None
    if token is None:
        if optional:
            g._jwt = None
            return
        raise TokenMissing()
    claims = _decode(token)
    if claims["type"] != ("refresh" if refresh else "access"):
        needed = "a refresh" if refresh else "an access"
        raise WrongTokenType(f"This endpoint needs {needed} token.")
    if by_cookie and not csrf_ok(claims):
        raise CsrfFailed()
    if fresh and not claims.get("fresh"):
        raise FreshTokenRequired()
    live = await load_live_session(
        session_id=uuid.UUID(claims["sid"]),
        user_public_id=uuid.UUID(claims["sub"]),
    )
    if live is None:
        raise TokenRevoked()
    if aal2:
        await _require_aal2(claims, live, unless_no_factor=False)
    g._jwt = claims
    g._jwt_session = live


def bearer_token() -> str | None:
    """The token of `Authorization: Bearer <token>` (RFC 6750), None without the header;
    any other shape of the header, or two of them, is `TokenInvalid`."""
    values = request.headers.getlist("Authorization")
    if not values:
        return None
    if len(values) > 1:  # a singleton field (RFC 9110 5.3): ambiguous, never pick one
        raise TokenInvalid("The Authorization header must be 'Bearer <token>'.")
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise TokenInvalid("The Authorization header must be 'Bearer <token>'.")
    return token


def _decode(token: str) -> dict[str, Any]:
    try:
        return tokens.decode_token(extensions.token_rules(), token)
    except tokens.TokenExpired:
        raise TokenExpired() from None
    except tokens.TokenError:
        raise TokenInvalid() from None


def get_jwt() -> dict[str, Any]:
    """The verified claims of the current request's token ({} when optional and absent)."""
    return dict(g.get("_jwt") or {})


def get_jwt_identity() -> str | None:
    """The `sub` claim (the user's public UUID) of the current token, or None."""
    return get_jwt().get("sub")


def get_live_session() -> LiveSession:
    """The session the current token belongs to, as the guard checked it."""
    live = g.get("_jwt_session")
    if live is None:
        raise RuntimeError("get_live_session() needs a view behind jwt_required()")
    return cast(LiveSession, live)


def _current_user() -> CurrentUser | None:
    live = g.get("_jwt_session")
    return live.user if live else None


#: The user of the current request's token (None when optional and absent): a read-only
#: `CurrentUser` (id, public_id, email, name, created_at, updated_at) from the guard's
#: query; load the `User` row by `current_user.id` to change it.
current_user: CurrentUser = cast(CurrentUser, LocalProxy(_current_user))
