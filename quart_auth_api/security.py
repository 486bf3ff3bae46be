"""Pure crypto: bcrypt in a bounded thread pool, JWT mint and decode.

This is the only module that imports python-jose. It imports nothing from Quart
or from the rest of the package: settings come in as arguments.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import bcrypt
from jose import ExpiredSignatureError, JWTError, jwt

TokenType = Literal["access", "refresh"]
ACCESS: TokenType = "access"
REFRESH: TokenType = "refresh"
REQUIRED_CLAIMS = ("sub", "sid", "jti", "type", "iat", "nbf", "exp", "iss", "aud")
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
#: Longer than any token this service mints; a bigger one is refused unread.
MAX_TOKEN_LENGTH = 4096
BCRYPT_MAX_BYTES = 72


# -- passwords -----------------------------------------------------------------


class PasswordHasher:
    """bcrypt off the event loop, in a pool bounded to `threads` workers."""

    def __init__(self, *, rounds: int, threads: int) -> None:
        self.rounds = rounds
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bcrypt")
        self._dummy_hash: bytes | None = None

    async def hash(self, password: str) -> str:
        hashed: bytes = await self._run(
            bcrypt.hashpw, _encode(password), bcrypt.gensalt(self.rounds)
        )
        return hashed.decode("ascii")

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check a password; with no hash, spend the same time and answer False."""
        if hashed is None:
            await self._run(bcrypt.checkpw, _encode(password), await self._dummy())
            return False
        matches: bool = await self._run(bcrypt.checkpw, _encode(password), hashed.encode("ascii"))
        return matches

    def needs_rehash(self, hashed: str) -> bool:
        """True when the hash was made with a lower cost than the current setting."""
        try:
            return int(hashed.split("$")[2]) < self.rounds
        except (IndexError, ValueError):
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _dummy(self) -> bytes:
        if self._dummy_hash is None:
            salt = bcrypt.gensalt(self.rounds)
            self._dummy_hash = await self._run(bcrypt.hashpw, secrets.token_bytes(16), salt)
        return self._dummy_hash

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)


def _encode(password: str) -> bytes:
    encoded = password.encode("utf-8")
    if len(encoded) > BCRYPT_MAX_BYTES:  # the schemas refuse it first; never truncate
        raise ValueError("password longer than 72 bytes")
    return encoded


# -- tokens --------------------------------------------------------------------


class TokenError(Exception):
    """A token that must be refused; `reason` is safe to show."""

    reason = "The token is invalid."


class TokenExpired(TokenError):
    reason = "The token has expired."


@dataclass(frozen=True)
class TokenKeys:
    """The signing key and the claims every token must carry."""

    secret: str
    algorithm: str
    issuer: str
    audience: str
    access_ttl: timedelta
    refresh_ttl: timedelta

    def __post_init__(self) -> None:
        if self.algorithm not in HMAC_ALGORITHMS:
            raise ValueError(f"unsupported JWT algorithm {self.algorithm!r}")

    @property
    def kid(self) -> str:
        """A public key id derived from the secret (a one-way digest, never the secret)."""
        digest = hashlib.sha256(b"quart-auth-api kid:" + self.secret.encode()).hexdigest()
        return digest[:16]


@dataclass(frozen=True)
class MintedToken:
    token: str
    jti: str
    expires_at: datetime


def mint_token(
    keys: TokenKeys,
    *,
    token_type: TokenType,
    subject: str,
    session_id: str,
    now: datetime,
    fresh: bool = False,
    generation: int | None = None,
) -> MintedToken:
    """Sign one token; refresh tokens carry the session generation as `gen`."""
    ttl = keys.access_ttl if token_type == ACCESS else keys.refresh_ttl
    issued = int(now.timestamp())
    expires_at = now + ttl
    jti = uuid.uuid4().hex
    claims: dict[str, Any] = {
        "sub": subject,
        "sid": session_id,
        "jti": jti,
        "type": token_type,
        "iat": issued,
        "nbf": issued,
        "exp": int(expires_at.timestamp()),
        "iss": keys.issuer,
        "aud": keys.audience,
    }
    if token_type == ACCESS:
        claims["fresh"] = fresh
    else:
        claims["gen"] = generation if generation is not None else 0
    headers = {"kid": keys.kid}
    token = jwt.encode(claims, keys.secret, algorithm=keys.algorithm, headers=headers)
    return MintedToken(token=token, jti=jti, expires_at=expires_at)


def decode_token(keys: TokenKeys, token: str) -> dict[str, Any]:
    """Verify signature, algorithm, kid, lifetime, issuer, audience and claim types."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError()
    try:
        header = jwt.get_unverified_header(token)
    except JWTError:
        raise TokenError() from None
    if header.get("alg") != keys.algorithm or not hmac.compare_digest(
        str(header.get("kid", "")), keys.kid
    ):
        raise TokenError()
    try:
        claims = jwt.decode(
            token,
            keys.secret,
            algorithms=[keys.algorithm],
            audience=keys.audience,
            issuer=keys.issuer,
            options={
                f"require_{name}": True
                for name in ("iat", "nbf", "exp", "iss", "aud", "sub", "jti")
            },
        )
    except ExpiredSignatureError:
        raise TokenExpired() from None
    except JWTError:
        raise TokenError() from None
    return _checked_claims(claims)


def _checked_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    if any(name not in claims for name in REQUIRED_CLAIMS):
        raise TokenError()
    if claims["type"] not in ("access", "refresh"):
        raise TokenError()
    for name in ("sub", "sid", "jti"):
        if not isinstance(claims[name], str):
            raise TokenError()
    try:
        uuid.UUID(claims["sub"])
        uuid.UUID(claims["sid"])
    except ValueError:
        raise TokenError() from None
    if claims["type"] == "access" and not isinstance(claims.get("fresh"), bool):
        raise TokenError()
    if claims["type"] == "refresh" and not _is_int(claims.get("gen")):
        raise TokenError()
    return dict(claims)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
