"""Tokens: JWT keys, mint and decode (passwords are `passwords.py`).

It imports nothing from Quart or from the rest of the package: settings come in
as arguments. It is the only module that imports python-jose, and it contains
that library's open weaknesses (3.5.0):

- `jwt.decode` takes the algorithm from the token when given no list: here it is
  always given one algorithm, the one pinned to the key that the token's `kid`
  names, so HS* and RS*/ES* never share a list and a public key never verifies
  an HMAC token (jose accepts a DER public key as an HMAC secret).
- jose guesses what a key is from a string (JSON, a JWK set, PEM): here every key
  is a `Cryptography*Key` object built from checked material, so jose never
  parses a key and never reaches its `ecdsa` or pure-Python `rsa` backends
  (`ecdsa` has an unfixed timing CVE).
- A JWE (five segments, `enc`), a key carried in the header (`jku`, `jwk`, `x5u`,
  `x5c`) or `crit` is refused before jose reads the token; `jose.jwe` is never
  imported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from calendar import timegm
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import ExpiredSignatureError, JWTError, jwt
from jose.backends.cryptography_backend import (
    CryptographyECKey,
    CryptographyHMACKey,
    CryptographyRSAKey,
)
from jose.exceptions import JWKError

TokenType = Literal["access", "refresh"]
ACCESS: TokenType = "access"
REFRESH: TokenType = "refresh"
REQUIRED_CLAIMS = ("sub", "sid", "jti", "type", "iat", "nbf", "exp", "iss", "aud")
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})
MIN_RSA_BITS = 2048
MAX_KEY_FILE_BYTES = 64 * 1024
#: Longer than any token this service mints; a bigger one is refused unread.
MAX_TOKEN_LENGTH = 4096
#: Verified tokens remembered per worker (each about 1.5 KiB).
VERIFIED_TOKENS = 1024
#: A compact JWS: three base64url segments. A JWE (five) never reaches jose.
COMPACT_JWS_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: The only header parameters a token may carry: `enc`, `zip`, `jku`, `jwk`, `x5u`,
#: `x5c`, `crit` and the rest are refused, never honoured.
ALLOWED_HEADER = frozenset({"alg", "kid", "typ"})
#: An OpenSSH public key or certificate (what jose's own check looks for, and more).
SSH_KEY_RE = re.compile(r"(ssh-(rsa|dss|ed25519|ed448)|ecdsa-sha2-|sk-(ssh|ecdsa)-)")


def email_digest(email: str) -> str:
    """A one-way name for an email address (SHA-256 hex of its trimmed lower case), for
    log lines and rate-limit keys that must never hold the address itself."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


# -- keys ----------------------------------------------------------------------


class InvalidKey(ValueError):
    """A secret or key that must not be used; the message says why (never the secret)."""


@dataclass(frozen=True)
class JwtKey:
    """One key: its public id and the one algorithm it is pinned to.

    `verifier` and `signer` are python-jose key objects of its cryptography backend;
    `signer` is None for a key that only verifies. `public_jwk` is what JWKS
    publishes (None for HMAC: a secret is never published).
    """

    kid: str
    algorithm: str
    verifier: Any = field(repr=False)
    signer: Any = field(default=None, repr=False)
    public_jwk: Mapping[str, str] | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TokenKeys:
    """The key set: one active signing key, retired keys that only verify, and the
    claims and lifetimes of every token."""

    signing_key: JwtKey
    issuer: str
    audience: str
    access_ttl: timedelta
    refresh_ttl: timedelta
    verification_keys: tuple[JwtKey, ...] = ()
    #: Tokens this key set has verified, so a token seen again skips the signature.
    verified: VerifiedTokens = field(
        default_factory=lambda: VerifiedTokens(VERIFIED_TOKENS), compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.signing_key.signer is None:
            raise InvalidKey("the signing key has no private part")
        retired = tuple(replace(key, signer=None) for key in self.verification_keys)
        object.__setattr__(self, "verification_keys", retired)  # still in __init__

    @property
    def kid(self) -> str:
        return self.signing_key.kid

    @property
    def algorithm(self) -> str:
        return self.signing_key.algorithm

    @property
    def secret(self) -> str:
        """The active HMAC secret (HS* key sets only)."""
        if self.signing_key.secret is None:
            raise AttributeError(f"a {self.algorithm} key set has no HMAC secret")
        return self.signing_key.secret

    def key_for(self, kid: object) -> JwtKey | None:
        """The key a token's `kid` names (the active key first), or None."""
        for key in (self.signing_key, *self.verification_keys):
            if key.kid == kid:  # a kid is public: a plain comparison is fine
                return key
        return None

    def public_jwks(self) -> list[dict[str, str]]:
        """Public JWKs of the RS256/ES256 keys, the active one first; [] for HMAC only."""
        keys = (self.signing_key, *self.verification_keys)
        return [dict(key.public_jwk) for key in keys if key.public_jwk is not None]


def hmac_key(secret: str, algorithm: str) -> JwtKey:
    """An HMAC key pinned to `algorithm`. A public key (PEM, DER, OpenSSH) is refused."""
    if algorithm not in HMAC_ALGORITHMS:
        raise InvalidKey(f"{algorithm!r} is not an HMAC algorithm (HS256, HS384, HS512)")
    if not secret:
        raise InvalidKey("an HMAC secret must not be empty")
    if _looks_like_a_key(secret):
        raise InvalidKey(
            "this looks like a key or certificate (PEM, DER or OpenSSH), and a public key "
            "is public: an HMAC secret must be a long random string"
        )
    try:
        jose_key = CryptographyHMACKey(secret, algorithm)
    except JWKError:
        raise InvalidKey("jose refuses this HMAC secret") from None
    digest = hashlib.sha256(b"quart-auth-api kid:" + secret.encode()).hexdigest()
    return JwtKey(digest[:16], algorithm, jose_key, signer=jose_key, secret=secret)


def private_key(pem: bytes, algorithm: str) -> JwtKey:
    """The RS256 or ES256 signing key of an unencrypted PEM private key."""
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        raise InvalidKey(f"{algorithm!r} is not RS256 or ES256")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise InvalidKey("the private key is encrypted; give an unencrypted PEM") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidKey("not a PEM private key") from None
    kind = rsa.RSAPrivateKey if algorithm == "RS256" else ec.EllipticCurvePrivateKey
    if not isinstance(private, kind):
        needed = "an RSA" if algorithm == "RS256" else "an EC P-256"
        raise InvalidKey(f"{algorithm} needs {needed} key, not {_kind(private.public_key())}")
    key = _asymmetric_key(private.public_key())
    return replace(key, signer=_jose_key(private, key.algorithm))


def public_key(pem: bytes) -> JwtKey:
    """A retired RS256 or ES256 key (a PEM public key) that only verifies."""
    try:
        public = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY-----" in pem:
            raise InvalidKey(
                "a private key: give its public key only (openssl pkey -in old.pem -pubout)"
            ) from None
        raise InvalidKey("not a PEM public key") from None
    return _asymmetric_key(public)


def read_key_file(path: Path) -> bytes:
    """A key file's bytes (read once, at start-up)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise InvalidKey(f"cannot read it ({error.strerror or type(error).__name__})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidKey("larger than 64 KiB: not a key file")
    return data


def _asymmetric_key(public: Any) -> JwtKey:
    algorithm = _pinned_algorithm(public)
    members = _thumbprint_members(public)
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())  # RFC 7638 thumbprint
    published = {"kty": members["kty"], "kid": kid, "alg": algorithm, "use": "sig"}
    published.update((name, value) for name, value in members.items() if name != "kty")
    return JwtKey(kid, algorithm, _jose_key(public, algorithm), public_jwk=published)


def _pinned_algorithm(public: Any) -> str:
    """RS256 for RSA of 2048 bits or more, ES256 for EC P-256; every other key refused."""
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise InvalidKey(
                f"a {public.key_size}-bit RSA key is too weak: at least {MIN_RSA_BITS} bits"
            )
        return "RS256"
    if isinstance(public, ec.EllipticCurvePublicKey):
        if not isinstance(public.curve, ec.SECP256R1):
            raise InvalidKey(
                f"an EC key on curve {public.curve.name}: ES256 needs P-256 (prime256v1)"
            )
        return "ES256"
    raise InvalidKey(f"{_kind(public)} keys are not supported: use RSA (RS256) or EC P-256 (ES256)")


def _thumbprint_members(public: Any) -> dict[str, str]:
    """The members RFC 7638 hashes: `e`, `kty`, `n` (RSA) or `crv`, `kty`, `x`, `y` (EC)."""
    numbers = public.public_numbers()
    if isinstance(public, rsa.RSAPublicKey):
        return {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
    size = (public.curve.key_size + 7) // 8
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(size, "big")),
        "y": _b64url(numbers.y.to_bytes(size, "big")),
    }


def _jose_key(key: Any, algorithm: str) -> Any:
    """jose's cryptography-backed key object: never its ecdsa or pure-Python backends."""
    if algorithm == "RS256":
        return CryptographyRSAKey(key, algorithm)
    return CryptographyECKey(key, algorithm)


def _kind(public: Any) -> str:
    if isinstance(public, rsa.RSAPublicKey):
        return "an RSA key"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"an EC {public.curve.name} key"
    return type(public).__name__.removesuffix("PublicKey") or "unknown"


def _looks_like_a_key(secret: str) -> bool:
    """PEM, OpenSSH, or DER (raw or base64) of a key or certificate."""
    text = secret.strip()
    if "-----BEGIN" in text or SSH_KEY_RE.search(text):
        return True
    candidates = [secret.encode(), secret.encode("latin-1", errors="ignore")]
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            pass
    return any(data[:1] == b"\x30" and _is_der_key(data) for data in candidates)


def _is_der_key(data: bytes) -> bool:
    loaders = (
        serialization.load_der_public_key,
        x509.load_der_x509_certificate,
        lambda der: serialization.load_der_private_key(der, password=None),
    )
    for load in loaders:
        try:
            load(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return True
    return False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


# -- tokens --------------------------------------------------------------------


class TokenError(Exception):
    """A token that must be refused; `reason` is safe to show."""

    reason = "The token is invalid."


class TokenExpired(TokenError):
    reason = "The token has expired."


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
    csrf: str | None = None,
) -> MintedToken:
    """Sign one token with the active key; refresh tokens carry the session generation,
    and with cookie transport every token carries its double-submit `csrf` value."""
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
    if csrf is not None:
        claims["csrf"] = csrf
    key = keys.signing_key
    token = jwt.encode(claims, key.signer, algorithm=key.algorithm, headers={"kid": key.kid})
    return MintedToken(token=token, jti=jti, expires_at=expires_at)


def decode_token(keys: TokenKeys, token: str) -> dict[str, Any]:
    """Verify with the key the `kid` names, pinned to that key's one algorithm; then
    lifetime, issuer, audience and claim types.

    A token verified before (the same string, so the same header, claims and
    signature) is taken from `keys.verified`, and only what time changes is checked
    again: `exp` and `nbf`, exactly as python-jose checks them.
    """
    claims = keys.verified.get(token)
    if claims is not None:
        now = _jose_now()
        if claims["exp"] < now:
            raise TokenExpired()
        if claims["nbf"] > now:
            raise TokenError()
        return claims
    claims = _verify(keys, token)
    keys.verified.put(token, claims)
    return claims


def _jose_now() -> int:
    """The clock python-jose's `decode` reads (whole seconds since the epoch, UTC)."""
    return timegm(datetime.now(tz=UTC).utctimetuple())


def _verify(keys: TokenKeys, token: str) -> dict[str, Any]:
    key = _verifying_key(keys, token)
    try:
        claims = jwt.decode(
            token,
            key.verifier,
            algorithms=[key.algorithm],
            audience=keys.audience,
            issuer=keys.issuer,
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
    ever found, and the cache dies with its key set. Revocation is not cached: the
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


def _verifying_key(keys: TokenKeys, token: str) -> JwtKey:
    """The known key the header names with its pinned `alg`, read before any verification."""
    if len(token) > MAX_TOKEN_LENGTH or not COMPACT_JWS_RE.fullmatch(token):
        raise TokenError()
    try:
        header = jwt.get_unverified_header(token)
    except JWTError:
        raise TokenError() from None
    if not set(header) <= ALLOWED_HEADER or header.get("typ", "JWT") != "JWT":
        raise TokenError()
    key = keys.key_for(header.get("kid"))
    if key is None or header.get("alg") != key.algorithm:
        raise TokenError()
    return key


def _checked_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
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
    if claims["type"] == "refresh" and not _is_int(claims.get("gen")):
        raise TokenError()
    return dict(claims)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
