"""Digests: one-way names for values that must never appear themselves, and the
one-time tokens of links (stored only as their digest).

An account is named in log lines and rate-limit keys by a keyed digest of its address
(HMAC-SHA256), never by the address or a plain hash of it: without the key, a known
address cannot be turned into its name. The key is derived from the service's
SECRET_KEY (HKDF-SHA256, one `purpose` per use), so every worker and every restart with
the same secret names an account the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The HKDF `info` of the account-digest key.
ACCOUNT_DIGEST = "account digest"
#: The HKDF `info` of the default key that seals TOTP secrets (no MFA_ENCRYPTION_KEY).
MFA_SEALING = "mfa sealing"
#: Random bytes in a one-time link token (URL-safe base64: 43 characters).
LINK_TOKEN_BYTES = 32


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one `purpose`, derived from `secret` (HKDF-SHA256)."""
    info = f"quart-auth-api {purpose}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode())


def email_digest(email: str, key: bytes) -> str:
    """The keyed one-way name of an email address (HMAC-SHA256 hex of its trimmed lower
    case), for log lines and rate-limit keys that must never hold the address itself."""
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


def new_link_token() -> tuple[str, str]:
    """A one-time link token: (what the link carries, what the database keeps). Only the
    SHA-256 digest is stored, so a copy of the database opens no link; 32 random bytes
    need no key and no slow hash to be unguessable."""
    raw = secrets.token_urlsafe(LINK_TOKEN_BYTES)
    return raw, link_digest(raw)


def link_digest(raw: str) -> str:
    """The stored name of a link token (SHA-256 hex)."""
    return hashlib.sha256(raw.encode()).hexdigest()
