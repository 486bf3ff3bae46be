"""Blueprint `auth` at `/auth`: register, login, refresh, logout, me."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint, validate_request, validate_response

from .. import extensions
from ..audit import account_ref, audit
from ..client import Client
from ..db import get_db
from ..docs import documents_errors
from ..errors import (
    Aal2Required,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    RateLimited,
    RefreshTokenReused,
    ServiceUnavailable,
)
from ..guards import (
    check_aal2_if_enrolled,
    get_jwt,
    get_live_session,
    jwt_required,
)
from ..hooks import optional_body
from ..ratelimit import limit_by_ip, rate_limit
from ..schemas import (
    LoginIn,
    LogoutIn,
    MessageOut,
    PendingOut,
    RegisterIn,
    RegisterOut,
    TokenOut,
    UserOut,
)
from ..schemas_mfa import LoginOut, MfaRequiredOut
from ..services import mfa
from ..services.accounts import authenticate, register_user
from ..services.outbox import enqueue_link
from ..services.sessions import (
    open_checked_session,
    open_session,
    revoke_session,
    revoke_sessions,
    rotate_refresh,
)
from ..transport import cookies_enabled, issue_tokens, unset_token_cookies

bp = Blueprint("auth", __name__, url_prefix="/auth")
tag_blueprint(bp, ["auth"])


@bp.post("/register")
@documents_errors(EmailTaken, RateLimited, ServiceUnavailable)
@validate_request(RegisterIn)
@validate_response(RegisterOut, 201)
async def register(data: RegisterIn) -> tuple[RegisterOut, int]:
    """Create an account and log it in.

    Opens a session and answers with an access token (fresh) and a refresh token; with
    mail on, a link to prove the address is mailed. With `EMAIL_VERIFICATION=mandatory`
    the answer is the user and no tokens (`verification_required`): log in once the
    link is opened. The email is stored lower-cased; a taken email is a 409
    `email_taken`. Attempts are limited per email and per client (429 `rate_limited`).
    """
    await rate_limit("register", "account", "ip", account=data.email)
    db = get_db()
    password_hash = await extensions.hasher().hash(data.password)
    user = await register_user(db, email=data.email, password_hash=password_hash, name=data.name)
    if extensions.mail_enabled():
        enqueue_link(db, kind="email_verify", to=user.email, user_id=user.id)
    if extensions.settings().email_verification == "mandatory":
        await db.commit()
        audit("register", user=user.public_id)
        return RegisterOut(PendingOut(user=UserOut.of(user))), 201
    lifetime = extensions.token_rules().refresh_ttl
    session = await open_session(db, user=user, client=Client.of_request(), lifetime=lifetime)
    tokens = issue_tokens(user, session.id, generation=0, fresh=True, event="register")
    return RegisterOut(tokens), 201


@bp.post("/login")
@documents_errors(InvalidCredentials, EmailNotVerified, RateLimited, ServiceUnavailable)
@validate_request(LoginIn)
@validate_response(LoginOut)
async def login(data: LoginIn) -> LoginOut:
    """Log in with email and password.

    Opens a new session. For an account with a second factor, the right password
    opens none yet: the answer is `mfa_required` with an `mfa_token` for
    `POST /auth/mfa/challenge`, and no tokens. A wrong email or password is one
    generic 401 `invalid_credentials`, answered in the same time either way. Every
    attempt, right password or not, counts against a limit per client and email and
    one per client (429 `rate_limited`). With `EMAIL_VERIFICATION=mandatory`, the
    right password of an address not yet proved is a 403 `email_not_verified`.
    """
    await rate_limit("login", "ip+account", "ip", account=data.email)
    db = get_db()
    user = await authenticate(
        db,
        hasher=extensions.hasher(),
        email=data.email,
        password=data.password,
        require_verified=extensions.settings().email_verification == "mandatory",
    )
    lifetime = extensions.token_rules().refresh_ttl
    session_id = await open_checked_session(
        user=user, client=Client.of_request(), lifetime=lifetime
    )
    if session_id is not None:
        return LoginOut(issue_tokens(user, session_id, generation=0, fresh=True, event="login_ok"))
    # no session: a second factor guards the account, or the credentials changed meanwhile
    if not await mfa.factor_committed(user_id=user.id):
        raise InvalidCredentials(account=account_ref(user.email))
    mfa_token = await mfa.open_challenge(db, user=user)
    audit("mfa_challenge_issued", user=user.public_id)
    expires_in = int(mfa.CHALLENGE_LIFETIME.total_seconds())
    return LoginOut(MfaRequiredOut(mfa_token=mfa_token, expires_in=expires_in))


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
    generation = await rotate_refresh(
        get_db(),
        live=live,
        token_generation=get_jwt()["gen"],
        lifetime=extensions.token_rules().refresh_ttl,
        reuse_interval=extensions.settings().jwt_refresh_reuse_interval,
    )
    return issue_tokens(
        live.user,
        live.session_id,
        generation=generation,
        fresh=False,
        event="refresh",
        amr=live.amr,
    )


@bp.post("/logout")
@documents_errors(Aal2Required)
@jwt_required()
@optional_body(LogoutIn)
@validate_response(MessageOut)
async def logout(data: LogoutIn) -> MessageOut:
    """Log out: revoke this session, every other one, or all of them.

    The body is optional: `scope` is `local` (this session, the default), `others`
    (every other session of the user: "log out everywhere else") or `global` (all of
    them). Revoked sessions' access and refresh tokens are refused from then on, in
    every worker and instance. For a user with a second factor, `others` and
    `global` need a session that passed it (403 `aal2_required`).
    """
    live = get_live_session()
    db = get_db()
    if data.scope != "local":
        await check_aal2_if_enrolled()
        keep = live.session_id if data.scope == "others" else None
        await revoke_sessions(db, user_id=live.user.id, reason=f"logout_{data.scope}", keep=keep)
    if data.scope != "others":
        await revoke_session(db, session_id=live.session_id, reason="logout")
    await db.commit()
    audit("logout", user=live.user.public_id, sid=live.session_id, scope=data.scope)
    if cookies_enabled() and data.scope != "others":
        unset_token_cookies()
    return MessageOut(message="Successfully logged out.")


@bp.get("/me")
@jwt_required()
@validate_response(UserOut)
async def me() -> UserOut:
    """The current user.

    Needs an access token of a live session.
    """
    return UserOut.of(get_live_session().user)
