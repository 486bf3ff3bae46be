"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks): real tokens.

Every generated request to a protected operation gets the tokens of a brand-new
account, so one example's logout or refresh-token replay never starves the next:
the refresh token for POST /auth/refresh, the access token elsewhere. The operations
that need a passed second factor get an account with a TOTP factor enrolled (its
aal2 tokens).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import httpx
import schemathesis

from quart_auth_api.crypto import totp

PROTECTED = [
    "/auth/refresh",
    "/auth/logout",
    "/auth/me",
    "/auth/sessions",
    "/auth/sessions/{session_id}",
    "/auth/password/change",
    "/auth/email/change",
    "/auth/email/change/confirm",
    "/auth/mfa/totp",
    "/auth/mfa/totp/verify",
    "/auth/mfa/recovery-codes",
]
#: (method, path) of the operations that need an aal2 session.
NEEDS_AAL2 = {("POST", "/auth/mfa/recovery-codes"), ("DELETE", "/auth/mfa/totp")}


@schemathesis.auth(refresh_interval=None).apply_to(path=PROTECTED)
class FreshAccount:
    def get(self, case: Any, context: Any) -> dict[str, Any]:
        base_url = os.environ["QAA_BASE_URL"]
        email = f"fuzz-{uuid.uuid4().hex}@example.com"
        body = {"email": email, "password": "correct horse battery", "name": "Fuzz"}
        response = httpx.post(f"{base_url}/auth/register", json=body, timeout=10)
        response.raise_for_status()
        if (case.method.upper(), case.path) not in NEEDS_AAL2:
            return dict(response.json())
        return _enrolled(base_url, response.json()["access_token"])

    def set(self, case: Any, data: dict[str, Any], context: Any) -> None:
        kind = "refresh_token" if case.path == "/auth/refresh" else "access_token"
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data[kind]}"}


def _enrolled(base_url: str, access_token: str) -> dict[str, Any]:
    """Enrol a TOTP factor with the account's fresh token: the aal2 token body."""
    auth = {"Authorization": f"Bearer {access_token}"}
    started = httpx.post(f"{base_url}/auth/mfa/totp", headers=auth, timeout=10)
    started.raise_for_status()
    factor = started.json()
    now = int(time.time()) // 30
    body = {"factor_id": factor["factor_id"], "code": totp.code_at(factor["secret"], now)}
    confirmed = httpx.post(f"{base_url}/auth/mfa/totp/verify", headers=auth, json=body, timeout=10)
    confirmed.raise_for_status()
    return dict(confirmed.json())
