"""Blueprint `account` at `/auth`: the account lifecycle (password reset and change,
address verification and change, name, deletion)."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint, validate_request, validate_response

from .. import extensions
from ..audit import account_ref, audit
from ..db import get_db
from ..docs import documents_errors, documents_response
from ..errors import (
    EmailTaken,
    InvalidLinkToken,
    MailUnavailable,
    RateLimited,
    ServiceUnavailable,
    WrongPassword,
)
from ..guards import aal2_if_enrolled, current_user, get_jwt, get_live_session, jwt_required
from ..ratelimit import limit_by_ip, rate_limit
from ..schemas import MessageOut, TokenOut, UserOut
from ..schemas_account import (
    ChangeEmailIn,
    ChangePasswordIn,
    EmailIn,
    LinkTokenIn,
    ResetPasswordIn,
    UpdateMeIn,
)
from ..services import accounts
from ..transport import cookies_enabled, issue_tokens, unset_token_cookies

bp = Blueprint("account", __name__, url_prefix="/auth")
tag_blueprint(bp, ["account"])

SENT = "If an account has this address, a mail with a link is on its way."


def _require_mail() -> None:
    if not extensions.mail_enabled():
        raise MailUnavailable()


@bp.post("/password/forgot")
@documents_errors(MailUnavailable, RateLimited, ServiceUnavailable)
@validate_request(EmailIn)
@validate_response(MessageOut, 202)
async def forgot_password(data: EmailIn) -> tuple[MessageOut, int]:
    """Mail a link to choose a new password.

    The same 202, in the same time, for every address: unknown, inactive or known (the
    mail goes only to an active account, composed by the sender after the answer). The
    link opens `/reset-password` and works once, for `PASSWORD_RESET_TOKEN_EXPIRES`.
    Limited per address, from any client, and per client (429 `rate_limited`); 503
    `mail_unavailable` when the service sends no mail.
    """
    _require_mail()
    await rate_limit("forgot", "account", "ip", account=data.email)
    await accounts.request_link(get_db(), kind="password_reset", email=data.email)
    audit("password_reset_requested", account=account_ref(data.email))
    return MessageOut(message=SENT), 202


@bp.post("/password/reset")
@documents_errors(InvalidLinkToken, RateLimited, ServiceUnavailable)
@limit_by_ip("link")
@validate_request(ResetPasswordIn)
@validate_response(MessageOut)
async def reset_password(data: ResetPasswordIn) -> MessageOut:
    """Choose a new password with the token of a reset link.

    Every session of the account ends (log in again), the address counts as proved,
    other reset links stop working and a notice is mailed. An unknown, expired, used or
    other link's token is one answer: 400 `invalid_link_token`.
    """
    user = await accounts.reset_password(
        get_db(),
        hasher=extensions.hasher(),
        raw=data.token,
        password=data.password,
        notify=extensions.mail_enabled(),
    )
    audit("password_reset", user=user.public_id)
    return MessageOut(message="Your password has been reset: log in with it.")


@bp.post("/password/change")
@documents_errors(WrongPassword, RateLimited)
@jwt_required()
@aal2_if_enrolled
@validate_request(ChangePasswordIn)
@validate_response(TokenOut)
async def change_password(data: ChangePasswordIn) -> TokenOut:
    """Change the password, giving the current one.

    A wrong current password is a 403 `invalid_credentials` (limited as logins are);
    a new password equal to it is a 422. Every other session ends; this one goes on
    with new tokens (the old refresh token is spent). A notice is mailed. For a user
    with a second factor, the session must have passed it (403 `aal2_required`).
    """
    await rate_limit("reauth", "account", "ip", account=current_user.email)
    live = get_live_session()
    user, generation = await accounts.change_password(
        get_db(),
        hasher=extensions.hasher(),
        user_id=live.user.id,
        session_id=live.session_id,
        current=data.current_password,
        new=data.new_password,
        lifetime=extensions.token_rules().refresh_ttl,
        notify=extensions.mail_enabled(),
    )
    return issue_tokens(
        user,
        live.session_id,
        generation=generation,
        fresh=True,
        event="password_changed",
        amr=live.amr,
    )


@bp.post("/email/verify")
@documents_errors(InvalidLinkToken, RateLimited, ServiceUnavailable)
@limit_by_ip("link")
@validate_request(LinkTokenIn)
@validate_response(UserOut)
async def verify_email(data: LinkTokenIn) -> UserOut:
    """Prove the address with the token of a verification link.

    Sets `email_verified_at`. An unknown, expired, used or other link's token, or one
    sent to an address the account no longer has, is 400 `invalid_link_token`.
    """
    user = await accounts.verify_email(get_db(), raw=data.token)
    audit("email_verified", user=user.public_id)
    return UserOut.of(user)


@bp.post("/email/verification")
@documents_errors(MailUnavailable, RateLimited, ServiceUnavailable)
@validate_request(EmailIn)
@validate_response(MessageOut, 202)
async def resend_verification(data: EmailIn) -> tuple[MessageOut, int]:
    """Mail a new verification link.

    The same 202 for every address (the mail goes only to an active account whose
    address is not proved yet); once a minute per address (429 `rate_limited`).
    """
    _require_mail()
    await rate_limit("verification", "account", "ip", account=data.email)
    await accounts.request_link(get_db(), kind="email_verify", email=data.email)
    audit("verification_requested", account=account_ref(data.email))
    return MessageOut(message=SENT), 202


@bp.post("/email/change")
@documents_errors(MailUnavailable, WrongPassword, EmailTaken, RateLimited)
@jwt_required()
@aal2_if_enrolled
@validate_request(ChangeEmailIn)
@validate_response(MessageOut, 202)
async def change_email(data: ChangeEmailIn) -> tuple[MessageOut, int]:
    """Ask to move the account to a new address, giving the password.

    A link is mailed to the new address and a notice to the current one; nothing
    changes until the link is used (`/auth/email/change/confirm`). A wrong password is a
    403 `invalid_credentials`; an address another account has, 409 `email_taken`. For
    a user with a second factor, the session must have passed it (403
    `aal2_required`).
    """
    _require_mail()
    await rate_limit("reauth", "account", "ip", account=current_user.email)
    user = await accounts.request_email_change(
        get_db(),
        hasher=extensions.hasher(),
        user_id=current_user.id,
        password=data.password,
        new_email=data.new_email,
    )
    audit("email_change_requested", user=user.public_id)
    return MessageOut(message="A link to confirm the new address is on its way."), 202


@bp.post("/email/change/confirm")
@documents_errors(InvalidLinkToken, EmailTaken, RateLimited, ServiceUnavailable)
@limit_by_ip("link")
@jwt_required(optional=True)
@validate_request(LinkTokenIn)
@validate_response(UserOut)
async def confirm_email_change(data: LinkTokenIn) -> UserOut:
    """Apply a new address with the token of its confirmation link.

    The address counts as proved; every session of the account ends but the one this
    request's access token belongs to, if it sends one. An address another account took
    meanwhile is a 409 `email_taken` (the link stays usable); a bad token, 400
    `invalid_link_token`.
    """
    keep = get_live_session().session_id if get_jwt() else None
    user, _ = await accounts.confirm_email_change(get_db(), raw=data.token, keep=keep)
    audit("email_changed", user=user.public_id)
    return UserOut.of(user)


@bp.patch("/me")
@jwt_required()
@validate_request(UpdateMeIn)
@validate_response(UserOut)
async def update_me(data: UpdateMeIn) -> UserOut:
    """Change the current user's name.

    The address and the password have their own flows (`/auth/email/change`,
    `/auth/password/change`).
    """
    user = await accounts.update_name(get_db(), user_id=current_user.id, name=data.name)
    return UserOut.of(user)


@bp.delete("/me")
@jwt_required(fresh=True)
@aal2_if_enrolled
@documents_response(204, "Deleted.")
async def delete_me() -> tuple[str, int]:
    """Delete the account.

    Needs a fresh access token (from a login, not a refresh) and, for a user with a
    second factor, a session that passed it (403 `aal2_required`). The user, every
    session, every link token, the factor and every mail still waiting are deleted at
    once; the address can register again.
    """
    live = get_live_session()
    await accounts.delete_account(get_db(), user_id=live.user.id)
    audit("account_deleted", user=live.user.public_id)
    if cookies_enabled():
        unset_token_cookies()
    return "", 204
