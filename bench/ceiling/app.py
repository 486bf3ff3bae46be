"""The ceiling: the most this service's stack can do for `GET /auth/me` and
`POST /auth/login`.

Quart under hypercorn with uvloop (bench/ceiling/serve.py), no database, no middleware:
`GET /auth/me` decodes the bearer token with python-jose, as the service does (HS256
pinned, the signature, `exp`/`iat`/`nbf`, issuer and audience, the claims required, an
access token only), and answers a body of the service's `User` shape from the claims.
A bad token is a 401. Like the service (`crypto/tokens.py`, `VerifiedTokens`) it
remembers the claims of the last 1024 tokens it verified and, for a token seen again,
checks only `exp` and `nbf`: without that the "ceiling" would do more per request than
the service does. `GET /healthz` answers 200 (readiness). The service's own tokens
drive it: it is started with the service's JWT_SECRET_KEY.

`POST /auth/login` is a login with no database: the JSON body's `email` and `password`
(strings, or a 422), one `bcrypt.checkpw` at the service's cost (`BCRYPT_ROUNDS`) against
one hash made at start for the benchmark's password, in a pool of threads at nice +10
sized as the service's is (one hash per core across the workers), then an access and a
refresh token signed as the service signs them, and a body of the service's token
shape; a wrong password is a 401.
What it leaves out is what the service adds: the user's row, the session's insert,
the schemas, the hooks.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import bcrypt
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
#: The seeded accounts' password (bench/common.py), hashed once at the service's cost.
PASSWORD = b"correct horse battery staple"
HASHED = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(int(os.environ.get("BCRYPT_ROUNDS", "12"))))
ACCESS_SECONDS, REFRESH_SECONDS = 900, 30 * 24 * 3600  # the service's defaults
HASHING_NICENESS = 10  # quart_auth_api/crypto/passwords.py


def _lower_priority() -> None:
    thread = threading.get_native_id()
    os.setpriority(
        os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + HASHING_NICENESS)
    )


#: As the service's BCRYPT_THREADS default (settings.py): one hash per core across the
#: machine's workers, so that no two hashes share a core.
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("WEB_CONCURRENCY", "1")))
hashing = ThreadPoolExecutor(max_workers=THREADS, initializer=_lower_priority)

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


@app.post("/auth/login")
async def login() -> Any:
    body = await request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(email, str) or not isinstance(password, str):
        return {"title": "Unprocessable Content", "status": 422}, 422
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(hashing, bcrypt.checkpw, password.encode(), HASHED):
        return REFUSED, 401
    issued = int(time.time())
    subject = secrets.token_hex(16)

    def mint(kind: str, seconds: int) -> str:
        claims = {
            "sub": subject,
            "jti": secrets.token_hex(16),
            "type": kind,
            "iat": issued,
            "nbf": issued,
            "exp": issued + seconds,
            "iss": ISSUER,
            "aud": AUDIENCE,
        }
        return jwt.encode(claims, KEY, algorithm=ALGORITHM)

    return {
        "access_token": mint("access", ACCESS_SECONDS),
        "refresh_token": mint("refresh", REFRESH_SECONDS),
        "token_type": "bearer",
        "expires_in": ACCESS_SECONDS,
    }
