"""JWT keys: the active signing key, retired keys that only verify, key files, JWKS.

Keys are built here from checked material with `cryptography` only; `tokens.py` hands
them to python-jose. Every key is pinned to one algorithm: HS256/384/512 for an HMAC
secret, RS256 for RSA of 2048 bits or more, ES256 for EC P-256. Anything else, and a
public key offered as an HMAC secret (jose would accept a DER public key as one), is
refused with an `InvalidKey` that says why, never the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})
MIN_RSA_BITS = 2048
MAX_KEY_FILE_BYTES = 64 * 1024
#: An OpenSSH public key or certificate (what jose's own check looks for, and more).
SSH_KEY_RE = re.compile(r"(ssh-(rsa|dss|ed25519|ed448)|ecdsa-sha2-|sk-(ssh|ecdsa)-)")


class InvalidKey(ValueError):
    """A secret or key that must not be used; the message says why (never the secret)."""


@dataclass(frozen=True)
class JwtKey:
    """One key: its public id and the one algorithm it is pinned to.

    `verifier` and `signer` are the key material: the secret for HMAC, `cryptography`
    public and private key objects for RS256/ES256; `signer` is None for a key that
    only verifies. `public_jwk` is what JWKS publishes (None for HMAC: a secret is
    never published).
    """

    kid: str
    algorithm: str
    verifier: Any = field(repr=False)
    signer: Any = field(default=None, repr=False)
    public_jwk: Mapping[str, str] | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class KeySet:
    """One active signing key and the retired keys that still verify."""

    signing_key: JwtKey
    verification_keys: tuple[JwtKey, ...] = ()

    def __post_init__(self) -> None:
        if self.signing_key.signer is None:
            raise InvalidKey("the signing key has no private part")
        retired = tuple(replace(key, signer=None) for key in self.verification_keys)
        object.__setattr__(self, "verification_keys", retired)  # still in __init__

    @property
    def all(self) -> tuple[JwtKey, ...]:
        """The active key first, then the retired ones."""
        return (self.signing_key, *self.verification_keys)

    def public_jwks(self) -> list[dict[str, str]]:
        """Public JWKs of the RS256/ES256 keys, the active one first; [] for HMAC only."""
        return [dict(key.public_jwk) for key in self.all if key.public_jwk is not None]


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
    digest = hashlib.sha256(b"quart-auth-api kid:" + secret.encode()).hexdigest()
    return JwtKey(digest[:16], algorithm, secret, signer=secret, secret=secret)


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
    return replace(_asymmetric_key(private.public_key()), signer=private)


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
    return JwtKey(kid, algorithm, public, public_jwk=published)


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
