"""The ceiling: the most this service's stack can do for `GET /auth/me`.

Quart under hypercorn with uvloop (bench/ceiling/serve.py), no database, no middleware:
`GET /auth/me` decodes the bearer token with python-jose, as the service does (HS256
pinned, the signature, `exp`/`iat`/`nbf`, issuer and audience, the claims required, an
access token only), and answers a body of the service's `User` shape from the claims.
A bad token is a 401. Like the service (`crypto/tokens.py`, `VerifiedTokens`) it
remembers the claims of the last 1024 tokens it verified and, for a token seen again,
checks only `exp` and `nbf`: without that the "ceiling" would do more per request than
the service does. `GET /healthz` answers 200 (readiness). The service's own tokens
drive it: it is started with the service's JWT_SECRET_KEY.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from jose import JWTError, jwt
from jose.backends.cryptography_backend import CryptographyHMACKey
from quart import Quart, request

ALGORITHM = "HS256"
#: The service's defaults (settings.py: JWT_ISSUER, JWT_AUDIENCE); the bench sets neither.
ISSUER = os.environ.get("JWT_ISSUER", "quart-auth-api")
AUDIENCE = os.environ.get("JWT_AUDIENCE", "quart-auth-api")
#: Built once, as the service builds its key: jose never guesses what a string is.
KEY = CryptographyHMACKey(os.environ["JWT_SECRET_KEY"], ALGORITHM)
OPTIONS = {f"require_{name}": True for name in ("iat", "nbf", "exp", "iss", "aud", "sub", "jti")}
REFUSED = {"title": "Unauthorized", "status": 401}
VERIFIED_TOKENS = 1024
verified: dict[str, dict[str, Any]] = {}

app = Quart(__name__)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/auth/me")
async def me() -> Any:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return REFUSED, 401
    claims = verified.get(token)
    if claims is None:
        try:
            claims = jwt.decode(
                token,
                KEY,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options=OPTIONS,
            )
        except (JWTError, TypeError, ValueError, OverflowError):
            return REFUSED, 401
        if claims.get("type") != "access":
            return REFUSED, 401
        if len(verified) >= VERIFIED_TOKENS:
            verified.clear()
        verified[token] = claims
    elif not claims["nbf"] <= time.time() <= claims["exp"]:
        return REFUSED, 401
    issued = datetime.fromtimestamp(claims["iat"], UTC).isoformat()
    return {
        "id": claims["sub"],
        "email": f"{claims['sub']}@ceiling.invalid",
        "name": "Ceiling",
        "email_verified": False,
        "email_verified_at": None,
        "created_at": issued,
        "updated_at": issued,
    }
