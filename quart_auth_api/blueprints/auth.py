"""Blueprint `auth` at `/auth`: register, login, refresh, logout, me."""

from __future__ import annotations

import uuid
from datetime import timedelta

from quart import Blueprint, current_app, request
from quart_schema import tag_blueprint, validate_request, validate_response

from ..audit import audit
from ..db import get_db, write
from ..docs import documents_errors
from ..errors import (
    EmailTaken,
    InvalidCredentials,
    RateLimited,
    RefreshTokenReused,
    ServiceUnavailable,
)
from ..guards import current_user, get_jwt, get_live_session, jwt_required
from ..hooks import client_ip
from ..models import User, utcnow
from ..ratelimit import limit_by_ip, rate_limit
from ..schemas import LoginIn, MessageOut, RegisterIn, TokenOut, UserOut
from ..security import ACCESS, REFRESH, mint_token
from ..services import (
    Client,
    CurrentUser,
    authenticate,
    open_session,
    register_user,
    revoke_session,
    settle_refresh,
    try_rotate,
)
from ..transport import (
    CookieTokens,
    cookies_enabled,
    new_csrf_value,
    set_token_cookies,
    unset_token_cookies,
)

bp = Blueprint("auth", __name__, url_prefix="/auth")
tag_blueprint(bp, ["auth"])


def _client() -> Client:
    return Client(user_agent=request.headers.get("User-Agent"), ip=client_ip())


@bp.post("/register")
@documents_errors(EmailTaken, RateLimited, ServiceUnavailable)
@validate_request(RegisterIn)
@validate_response(TokenOut, 201)
async def register(data: RegisterIn) -> tuple[TokenOut, int]:
    """Create an account and log it in.

    Opens a session and answers with an access token (fresh) and a refresh token.
    The email is stored lower-cased; a taken email is a 409 `email_taken`.
    Attempts are limited per email and per client (429 `rate_limited`).
    """
    await rate_limit("register", "account", "ip", account=data.email)
    hasher = current_app.extensions["hasher"]
    db = get_db()
    user = await register_user(
        db, email=data.email, password_hash=await hasher.hash(data.password), name=data.name
    )
    session = await open_session(db, user=user, client=_client(), lifetime=_refresh_ttl())
    return issue_tokens(user, session.id, generation=0, fresh=True, event="register"), 201


@bp.post("/login")
@documents_errors(InvalidCredentials, RateLimited, ServiceUnavailable)
@validate_request(LoginIn)
@validate_response(TokenOut)
async def login(data: LoginIn) -> TokenOut:
    """Log in with email and password.

    Opens a new session. A wrong email or password is one generic 401
    `invalid_credentials`, answered in the same time either way. Every attempt,
    right password or not, counts against a limit per client and email and one
    per client (429 `rate_limited`).
    """
    await rate_limit("login", "ip+account", "ip", account=data.email)
    db = get_db()
    user = await authenticate(
        db, hasher=current_app.extensions["hasher"], email=data.email, password=data.password
    )
    session = await open_session(db, user=user, client=_client(), lifetime=_refresh_ttl())
    return issue_tokens(user, session.id, generation=0, fresh=True, event="login_ok")


@bp.post("/refresh")
@documents_errors(RefreshTokenReused, RateLimited)
@limit_by_ip("refresh")
@jwt_required(refresh=True)
@validate_response(TokenOut)
async def refresh() -> TokenOut:
    """Trade a refresh token for new tokens.

    Send the refresh token as `Authorization: Bearer` (or, with cookie transport, the
    `refresh_token_cookie` with its `X-CSRF-TOKEN`). The refresh token rotates:
    the old one stops working, except that for `JWT_REFRESH_REUSE_INTERVAL` seconds
    it still answers with the current tokens (several tabs refreshing at once).
    An older refresh token is a replay: the session is revoked
    (`refresh_token_reused`). Refreshes are limited per session and per client
    (429 `rate_limited`).
    """
    await rate_limit("refresh", "session", session=get_jwt()["sid"])
    live = get_live_session()
    settings = current_app.extensions["settings"]
    token_generation: int = get_jwt()["gen"]
    rotated = await try_rotate(
        write,
        live=live,
        token_generation=token_generation,
        lifetime=settings.jwt_refresh_token_expires,
    )
    if rotated:  # the normal case: one statement
        generation = token_generation + 1
    else:
        generation = await settle_refresh(
            get_db(),
            live=live,
            token_generation=token_generation,
            reuse_interval=settings.jwt_refresh_reuse_interval,
        )
    return issue_tokens(
        live.user, live.session_id, generation=generation, fresh=False, event="refresh"
    )


@bp.post("/logout")
@jwt_required()
@validate_response(MessageOut)
async def logout() -> MessageOut:
    """Log out: revoke the session.

    The session's access and refresh tokens are refused from then on, in every
    worker and instance.
    """
    live = get_live_session()
    await revoke_session(get_db(), session_id=live.session_id, reason="logout")
    audit("logout", user=live.user.public_id, sid=live.session_id)
    if cookies_enabled():
        unset_token_cookies()
    return MessageOut(message="Successfully logged out.")


@bp.get("/me")
@jwt_required()
@validate_response(UserOut)
async def me() -> UserOut:
    """The current user.

    Needs an access token of a live session.
    """
    return UserOut.of(current_user)


def _refresh_ttl() -> timedelta:
    ttl: timedelta = current_app.extensions["settings"].jwt_refresh_token_expires
    return ttl


def issue_tokens(
    user: User | CurrentUser, session_id: uuid.UUID, *, generation: int, fresh: bool, event: str
) -> TokenOut:
    """Mint an access and a refresh token for a session, log `event`, build the body."""
    audit(event, user=user.public_id, sid=session_id, gen=generation)
    keys = current_app.extensions["token_keys"]
    now = utcnow()
    subject, sid = str(user.public_id), str(session_id)
    cookies = cookies_enabled()
    access_csrf, refresh_csrf = (new_csrf_value(), new_csrf_value()) if cookies else (None, None)
    access = mint_token(
        keys,
        token_type=ACCESS,
        subject=subject,
        session_id=sid,
        now=now,
        fresh=fresh,
        csrf=access_csrf,
    )
    refresh = mint_token(
        keys,
        token_type=REFRESH,
        subject=subject,
        session_id=sid,
        now=now,
        generation=generation,
        csrf=refresh_csrf,
    )
    if access_csrf and refresh_csrf:
        set_token_cookies(CookieTokens(access.token, refresh.token, access_csrf, refresh_csrf))
    return TokenOut(
        user=UserOut.of(user),
        access_token=access.token,
        refresh_token=refresh.token,
        expires_in=int(keys.access_ttl.total_seconds()),
    )
