"""Blueprint `metrics`: `GET /metrics` for Prometheus, registered when METRICS_ENABLED.

With METRICS_TOKEN set it needs `Authorization: Bearer <METRICS_TOKEN>`, read by the
guards' one bearer parser and compared in constant time.
"""

from __future__ import annotations

import hmac

from quart import Blueprint, Response
from quart_schema import hide

from .. import extensions
from ..db import get_db
from ..errors import TokenInvalid, TokenMissing
from ..guards import bearer_token
from ..metrics import ACTIVE_SESSIONS, exposition
from ..services.sessions import count_live_sessions

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@hide
async def metrics() -> Response:
    expected = extensions.settings().metrics_token
    if expected is not None:
        sent = bearer_token()
        if sent is None:
            raise TokenMissing()
        if not hmac.compare_digest(sent.encode(), expected.get_secret_value().encode()):
            raise TokenInvalid()
    ACTIVE_SESSIONS.set(await count_live_sessions(get_db()))
    return exposition()
