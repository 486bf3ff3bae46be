"""Blueprint `sessions` at `/auth/sessions`: a user's own live sessions, and ending one."""

from __future__ import annotations

import uuid

from quart import Blueprint
from quart_schema import tag_blueprint, validate_response

from ..audit import audit
from ..db import get_db
from ..docs import documents_errors, documents_response
from ..errors import NotFound
from ..guards import aal2_if_enrolled, get_live_session, jwt_required
from ..schemas_account import SessionOut, SessionsOut
from ..services.sessions import list_sessions, revoke_user_session

bp = Blueprint("sessions", __name__, url_prefix="/auth/sessions")
tag_blueprint(bp, ["auth"])


@bp.get("")
@jwt_required()
@validate_response(SessionsOut)
async def sessions() -> SessionsOut:
    """The current user's live sessions.

    Newest first, each with where it was opened (address and user agent as the login
    sent them) and whether it is the one of this request's token.
    """
    live = get_live_session()
    rows = await list_sessions(get_db(), user_id=live.user.id)
    return SessionsOut(
        sessions=[
            SessionOut(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                expires_at=row.expires_at,
                user_agent=row.user_agent,
                ip=row.ip,
                current=row.id == live.session_id,
            )
            for row in rows
        ]
    )


@bp.delete("/<uuid:session_id>")
@documents_errors(NotFound)
@documents_response(204, "Revoked.")
@jwt_required()
@aal2_if_enrolled
async def revoke(session_id: uuid.UUID) -> tuple[str, int]:
    """End one of the current user's sessions.

    Its tokens are refused from then on, in every worker. An id that is not a live
    session of this user (another user's, or none at all) is 404 `not_found`. For a
    user with a second factor, this session must have passed it (403 `aal2_required`).
    """
    live = get_live_session()
    if not await revoke_user_session(
        get_db(), user_id=live.user.id, session_id=session_id, reason="revoked_by_user"
    ):
        raise NotFound()
    audit("session_revoked", user=live.user.public_id, sid=session_id)
    return "", 204
