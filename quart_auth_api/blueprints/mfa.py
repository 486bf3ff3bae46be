"""Blueprint `mfa` at `/auth/mfa`: a TOTP factor (enrol, confirm, remove), the challenge
that finishes a login, and recovery codes."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint, validate_request, validate_response

from .. import extensions
from ..audit import audit
from ..client import Client
from ..crypto import totp
from ..db import get_db
from ..docs import documents_errors, documents_response
from ..errors import (
    MfaAlreadyEnrolled,
    MfaInvalidCode,
    MfaTokenInvalid,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    WrongMfaCode,
)
from ..guards import current_user, get_jwt, get_live_session, jwt_required
from ..ratelimit import rate_limit
from ..schemas import TokenOut
from ..schemas_mfa import (
    EnrolledOut,
    MfaChallengeIn,
    RecoveryCodesOut,
    TotpEnrolOut,
    TotpVerifyIn,
)
from ..services import mfa
from ..services.sessions import open_session
from ..transport import issue_tokens

bp = Blueprint("mfa", __name__, url_prefix="/auth/mfa")
tag_blueprint(bp, ["mfa"])


@bp.post("/totp")
@documents_errors(MfaAlreadyEnrolled)
@jwt_required(fresh=True)
@validate_response(TotpEnrolOut, 201)
async def enrol_totp() -> tuple[TotpEnrolOut, int]:
    """Start adding a TOTP authenticator.

    Needs a fresh access token. Answers the secret (shown only now) as base32, as an
    `otpauth://` URI and as a QR code (SVG) for an authenticator app. The factor is
    pending until `POST /auth/mfa/totp/verify` confirms it with a code, within 10
    minutes; starting again replaces a pending one. One factor per user: 409
    `mfa_already_enrolled` while one is on.
    """
    enrolment = await mfa.start_enrolment(
        get_db(), sealer=extensions.sealer(), user_id=current_user.id
    )
    uri = totp.provisioning_uri(
        enrolment.secret, account=current_user.email, issuer=extensions.settings().mfa_issuer
    )
    audit("mfa_enrolment_started", user=current_user.public_id)
    answer = TotpEnrolOut(
        factor_id=enrolment.factor_id,
        secret=enrolment.secret,
        otpauth_uri=uri,
        qr_svg=totp.qr_svg(uri),
    )
    return answer, 201


@bp.post("/totp/verify")
@documents_errors(WrongMfaCode, NotFound, RateLimited)
@jwt_required()
@validate_request(TotpVerifyIn)
@validate_response(EnrolledOut)
async def verify_totp(data: TotpVerifyIn) -> EnrolledOut:
    """Turn the pending factor on with a code it shows.

    Answers ten single-use recovery codes (shown only now) and new tokens of this
    session, which now counts as having passed the second factor (`aal2`); its old
    refresh token is spent. Every other session ends, and pending reset and
    address-change links are void (a password alone opened them). From now on, a login
    asks for a code. A wrong code is 403
    `mfa_invalid_code`; a factor id that is not your pending one (or expired), 404.
    Codes are limited per account (429 `rate_limited`).
    """
    await rate_limit("mfa", "account", "ip", account=current_user.email)
    live = get_live_session()
    codes, generation = await mfa.confirm_enrolment(
        get_db(),
        sealer=extensions.sealer(),
        user_id=live.user.id,
        factor_id=data.factor_id,
        code=data.code,
        session_id=live.session_id,
        lifetime=extensions.token_rules().refresh_ttl,
        notify=extensions.mail_enabled(),
    )
    tokens = issue_tokens(
        live.user,
        live.session_id,
        generation=generation,
        fresh=bool(get_jwt()["fresh"]),
        event="mfa_enrolled",
        amr=mfa.AMR_OTP,
    )
    return EnrolledOut(**vars(tokens), recovery_codes=codes)


@bp.post("/challenge")
@documents_errors(MfaTokenInvalid, MfaInvalidCode, RateLimited, ServiceUnavailable)
@validate_request(MfaChallengeIn)
@validate_response(TokenOut)
async def challenge(data: MfaChallengeIn) -> TokenOut:
    """Finish a login with the second factor.

    Send the `mfa_token` that `POST /auth/login` answered with and either a `code`
    from the authenticator or one of the `recovery_code`s (each works once). Opens the
    session (`aal2`) and answers the usual token body. A code is accepted once: never
    again, nor any code of an earlier time step. A wrong code is 401
    `mfa_invalid_code`; after 5 tries, or 5 minutes, the `mfa_token` is void (401
    `mfa_token_invalid`: log in again). Codes are limited per account across
    `mfa_token`s, and per client (429 `rate_limited`).
    """
    await rate_limit("mfa", "ip")
    db = get_db()
    found = await mfa.find_challenge(db, raw=data.mfa_token)
    await rate_limit("mfa", "account", account=found.email)
    await mfa.spend_try(db, challenge=found)
    user, amr = await mfa.pass_challenge(
        db,
        sealer=extensions.sealer(),
        challenge=found,
        code=data.code,
        recovery_code=data.recovery_code,
        notify=extensions.mail_enabled(),
    )
    session = await open_session(
        db,
        user=user,
        client=Client.of_request(),
        lifetime=extensions.token_rules().refresh_ttl,
        checked_hash=user.password_hash,
        amr=amr,
    )
    if amr == mfa.AMR_RECOVERY:
        audit("mfa_recovery_code_used", user=user.public_id, sid=session.id)
    return issue_tokens(
        user, session.id, generation=0, fresh=True, event="mfa_challenge_ok", amr=amr
    )


@bp.post("/recovery-codes")
@documents_errors(NotFound)
@jwt_required(fresh=True, aal2=True)
@validate_response(RecoveryCodesOut)
async def recovery_codes() -> RecoveryCodesOut:
    """Make ten new recovery codes.

    Needs a fresh access token of a session that passed the second factor (`aal2`).
    The old codes stop working; the new ones are shown only now; a notice is mailed.
    """
    live = get_live_session()
    codes = await mfa.regenerate_recovery_codes(
        get_db(), user_id=live.user.id, notify=extensions.mail_enabled()
    )
    audit("mfa_recovery_codes_regenerated", user=live.user.public_id, sid=live.session_id)
    return RecoveryCodesOut(recovery_codes=codes)


@bp.delete("/totp")
@documents_errors(NotFound)
@documents_response(204, "Removed.")
@jwt_required(fresh=True, aal2=True)
async def remove_totp() -> tuple[str, int]:
    """Remove the TOTP factor.

    Needs a fresh access token of a session that passed the second factor. The
    recovery codes go with it, every other session ends, and a login asks for the
    password alone again.
    """
    live = get_live_session()
    if not await mfa.remove_factor(
        get_db(), user_id=live.user.id, keep=live.session_id, notify=extensions.mail_enabled()
    ):
        raise NotFound("There is no TOTP factor to remove.")
    audit("mfa_factor_removed", user=live.user.public_id, sid=live.session_id)
    return "", 204
