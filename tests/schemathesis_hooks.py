"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks): real tokens.

Every generated request to a protected operation gets the tokens of a brand-new
account, so one example's logout or refresh-token replay never starves the next:
the refresh token for POST /auth/refresh, the access token elsewhere.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import schemathesis

PROTECTED = [
    "/auth/refresh",
    "/auth/logout",
    "/auth/me",
    "/auth/sessions",
    "/auth/sessions/{session_id}",
    "/auth/password/change",
    "/auth/email/change",
    "/auth/email/change/confirm",
]


@schemathesis.auth(refresh_interval=None).apply_to(path=PROTECTED)
class FreshAccount:
    def get(self, case: Any, context: Any) -> dict[str, Any]:
        base_url = os.environ["QAA_BASE_URL"]
        email = f"fuzz-{uuid.uuid4().hex}@example.com"
        body = {"email": email, "password": "correct horse battery", "name": "Fuzz"}
        response = httpx.post(f"{base_url}/auth/register", json=body, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def set(self, case: Any, data: dict[str, Any], context: Any) -> None:
        kind = "refresh_token" if case.path == "/auth/refresh" else "access_token"
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data[kind]}"}
