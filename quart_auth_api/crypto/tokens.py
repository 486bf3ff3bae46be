"""Tokens: the claim rules, mint and decode. The only module that imports python-jose.

It contains that library's open weaknesses (3.5.0):

- `jwt.decode` takes the algorithm from the token when given no list: here it is
  always given one algorithm, the one pinned to the key that the token's `kid`
  names, so HS* and RS*/ES* never share a list and a public key never verifies
  an HMAC token (jose accepts a DER public key as an HMAC secret).
- jose guesses what a key is from a string (JSON, a JWK set, PEM): here every key
  is a `Cryptography*Key` object built from the checked material of `keys.py`, so
  jose never parses a key and never reaches its `ecdsa` or pure-Python `rsa`
  backends (`ecdsa` has an unfixed timing CVE).
- A JWE (five segments, `enc`), a key carried in the header (`jku`, `jwk`, `x5u`,
  `x5c`) or `crit` is refused before jose reads the token; `jose.jwe` is never
  imported.
"""

from __future__ import annotations

import re
import uuid
from calendar import timegm
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jose import ExpiredSignatureError, JWTError, jwt
from jose.backends.cryptography_backend import (
    CryptographyECKey,
    CryptographyHMACKey,
    CryptographyRSAKey,
)
from jose.exceptions import JWKError

from .keys import HMAC_ALGORITHMS, InvalidKey, JwtKey, KeySet

TokenType = Literal["access", "refresh"]
ACCESS: TokenType = "access"
REFRESH: TokenType = "refresh"
REQUIRED_CLAIMS = ("sub", "sid", "jti", "type", "iat", "nbf", "exp", "iss", "aud")
#: Authentication methods (RFC 8176) a session can carry, and the assurance levels.
AMR_VALUES = frozenset({"pwd", "otp", "recovery_code"})
AAL1, AAL2 = "aal1", "aal2"
#: Longer than any token this service mints; a bigger one is refused unread.
MAX_TOKEN_LENGTH = 4096
#: Verified tokens remembered per worker (each about 1.5 KiB).
VERIFIED_TOKENS = 1024
#: A compact JWS: three base64url segments. A JWE (five) never reaches jose.
COMPACT_JWS_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: The only header parameters a token may carry: `enc`, `zip`, `jku`, `jwk`, `x5u`,
#: `x5c`, `crit` and the rest are refused, never honoured.
ALLOWED_HEADER = frozenset({"alg", "kid", "typ"})


class TokenError(Exception):
    """A token that must be refused; `reason` is safe to show."""

    reason = "The token is invalid."


class TokenExpired(TokenError):
    reason = "The token has expired."


@dataclass(frozen=True)
class JoseKey:
    """A `keys.JwtKey` as python-jose objects of its cryptography backend; `signer` is
    None for a key that only verifies."""

    kid: str
    algorithm: str
    verifier: Any = field(repr=False)
    signer: Any = field(default=None, repr=False)

    @classmethod
    def of(cls, key: JwtKey) -> JoseKey:
        if key.algorithm in HMAC_ALGORITHMS:
            try:
                hmac = CryptographyHMACKey(key.verifier, key.algorithm)
            except JWKError:
                raise InvalidKey("jose refuses this HMAC secret") from None
            return cls(key.kid, key.algorithm, hmac, hmac if key.signer is not None else None)
        backend = CryptographyRSAKey if key.algorithm == "RS256" else CryptographyECKey
        signer = None if key.signer is None else backend(key.signer, key.algorithm)
        return cls(key.kid, key.algorithm, backend(key.verifier, key.algorithm), signer)


@dataclass(frozen=True)
class TokenRules:
    """Everything a token is checked against: the keys, the issuer and audience, and
    the lifetimes (the one place they are carried once settings are read)."""

    keys: KeySet
    issuer: str
    audience: str
    access_ttl: timedelta
    refresh_ttl: timedelta
    #: Tokens these rules have verified, so a token seen again skips the signature.
    verified: VerifiedTokens = field(
        default_factory=lambda: VerifiedTokens(VERIFIED_TOKENS), compare=False, repr=False
    )
    signing_key: JoseKey = field(init=False, repr=False)
    verification_keys: tuple[JoseKey, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:  # the jose objects, built once (still in __init__)
        object.__setattr__(self, "signing_key", JoseKey.of(self.keys.signing_key))
        retired = tuple(JoseKey.of(key) for key in self.keys.verification_keys)
        object.__setattr__(self, "verification_keys", retired)

    @property
    def kid(self) -> str:
        return self.signing_key.kid

    @property
    def algorithm(self) -> str:
        return self.signing_key.algorithm

    @property
    def secret(self) -> str:
        """The active HMAC secret (HS* key sets only)."""
        if self.keys.signing_key.secret is None:
            raise AttributeError(f"a {self.algorithm} key set has no HMAC secret")
        return self.keys.signing_key.secret

    def key_for(self, kid: object) -> JoseKey | None:
        """The key a token's `kid` names (the active key first), or None."""
        for key in (self.signing_key, *self.verification_keys):
            if key.kid == kid:  # a kid is public: a plain comparison is fine
                return key
        return None

    def public_jwks(self) -> list[dict[str, str]]:
        return self.keys.public_jwks()


@dataclass(frozen=True)
class MintedToken:
    token: str
    jti: str
    expires_at: datetime


def mint_token(
    rules: TokenRules,
    *,
    token_type: TokenType,
    subject: str,
    session_id: str,
    now: datetime,
    fresh: bool = False,
    generation: int | None = None,
    csrf: str | None = None,
    amr: tuple[str, ...] = ("pwd",),
) -> MintedToken:
    """Sign one token with the active key; access tokens carry how the session was
    authenticated (`amr`, and the `aal` it makes), refresh tokens the session
    generation, and with cookie transport every token carries its double-submit `csrf`
    value."""
    ttl = rules.access_ttl if token_type == ACCESS else rules.refresh_ttl
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
        "iss": rules.issuer,
        "aud": rules.audience,
    }
    if token_type == ACCESS:
        claims["fresh"] = fresh
        claims["aal"] = assurance_level(amr)
        claims["amr"] = list(amr)
    else:
        claims["gen"] = generation if generation is not None else 0
    if csrf is not None:
        claims["csrf"] = csrf
    key = rules.signing_key
    token = jwt.encode(claims, key.signer, algorithm=key.algorithm, headers={"kid": key.kid})
    return MintedToken(token=token, jti=jti, expires_at=expires_at)


def decode_token(rules: TokenRules, token: str) -> dict[str, Any]:
    """Verify with the key the `kid` names, pinned to that key's one algorithm; then
    lifetime, issuer, audience and claim types.

    A token verified before (the same string, so the same header, claims and
    signature) is taken from `rules.verified`, and only what time changes is checked
    again: `exp` and `nbf`, exactly as python-jose checks them.
    """
    claims = rules.verified.get(token)
    if claims is not None:
        now = _jose_now()
        if claims["exp"] < now:
            raise TokenExpired()
        if claims["nbf"] > now:
            raise TokenError()
        return claims
    claims = _verify(rules, token)
    rules.verified.put(token, claims)
    return claims


def _jose_now() -> int:
    """The clock python-jose's `decode` reads (whole seconds since the epoch, UTC)."""
    return timegm(datetime.now(tz=UTC).utctimetuple())


def _verify(rules: TokenRules, token: str) -> dict[str, Any]:
    key = _verifying_key(rules, token)
    try:
        claims = jwt.decode(
            token,
            key.verifier,
            algorithms=[key.algorithm],
            audience=rules.audience,
            issuer=rules.issuer,
            options={
                f"require_{name}": True
                for name in ("iat", "nbf", "exp", "iss", "aud", "sub", "jti")
            },
        )
    except ExpiredSignatureError:
        raise TokenExpired() from None
    except (JWTError, TypeError, ValueError, OverflowError):
        # jose checks iat/nbf/exp with a bare int(): null, a list or Infinity raise
        raise TokenError() from None
    return _checked_claims(claims)


class VerifiedTokens:
    """The claims of the last `size` tokens verified (least recently used goes first).

    Verifying the same token on every request is a tenth of a `GET /auth/me`
    (bench/README.md); clients send one access token for many requests. An entry
    needs the exact token string, so only a token that passed every check once is
    ever found, and the cache dies with its rules. Revocation is not cached: the
    guard asks the database on every request.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._claims: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, token: str) -> dict[str, Any] | None:
        claims = self._claims.get(token)
        if claims is not None:
            self._claims.move_to_end(token)
        return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        self._claims[token] = claims
        if len(self._claims) > self.size:
            self._claims.popitem(last=False)

    def __len__(self) -> int:
        return len(self._claims)


def _verifying_key(rules: TokenRules, token: str) -> JoseKey:
    """The known key the header names with its pinned `alg`, read before any verification."""
    if len(token) > MAX_TOKEN_LENGTH or not COMPACT_JWS_RE.fullmatch(token):
        raise TokenError()
    try:
        header = jwt.get_unverified_header(token)
    except JWTError:
        raise TokenError() from None
    if not set(header) <= ALLOWED_HEADER or header.get("typ", "JWT") != "JWT":
        raise TokenError()
    key = rules.key_for(header.get("kid"))
    if key is None or header.get("alg") != key.algorithm:
        raise TokenError()
    return key


def _checked_claims(verified: Mapping[str, Any]) -> dict[str, Any]:
    claims = dict(verified)
    if any(name not in claims for name in REQUIRED_CLAIMS):
        raise TokenError()
    if claims["type"] not in ("access", "refresh"):
        raise TokenError()
    for name in ("sub", "sid", "jti"):
        if not isinstance(claims[name], str):
            raise TokenError()
    if not all(_is_int(claims[name]) for name in ("iat", "nbf", "exp")):
        raise TokenError()  # NumericDate as we mint it: a plain integer, never "123"
    try:
        uuid.UUID(claims["sub"])
        uuid.UUID(claims["sid"])
    except ValueError:
        raise TokenError() from None
    if claims["type"] == "access" and not isinstance(claims.get("fresh"), bool):
        raise TokenError()
    if claims["type"] == "access":
        _check_assurance(claims)
    if claims["type"] == "refresh" and not _is_int(claims.get("gen")):
        raise TokenError()
    return claims


def assurance_level(amr: tuple[str, ...] | list[str]) -> str:
    """`aal2` for a password and a second factor, `aal1` for a password alone."""
    return AAL2 if "pwd" in amr and set(amr) - {"pwd"} else AAL1


def _check_assurance(claims: dict[str, Any]) -> None:
    """`aal` and `amr` as minted, and agreeing with each other. An access token minted
    before they existed (at most JWT_ACCESS_TOKEN_EXPIRES old) counts as a password
    alone. The claims only say what the token was minted for: the guards compare them
    with the session's row."""
    amr = claims.setdefault("amr", ["pwd"])
    if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
        raise TokenError()
    if "pwd" not in amr or len(set(amr)) != len(amr):
        raise TokenError()
    if not set(amr) <= AMR_VALUES or claims.setdefault("aal", AAL1) != assurance_level(amr):
        raise TokenError()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
