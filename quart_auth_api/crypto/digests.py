"""Digests: one-way names for values that must never appear themselves.

An account is named in log lines and rate-limit keys by a keyed digest of its address
(HMAC-SHA256), never by the address or a plain hash of it: without the key, a known
address cannot be turned into its name. The key is derived from the service's
SECRET_KEY (HKDF-SHA256, one `purpose` per use), so every worker and every restart with
the same secret names an account the same way.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The HKDF `info` of the account-digest key.
ACCOUNT_DIGEST = "account digest"


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one `purpose`, derived from `secret` (HKDF-SHA256)."""
    info = f"quart-auth-api {purpose}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode())


def email_digest(email: str, key: bytes) -> str:
    """The keyed one-way name of an email address (HMAC-SHA256 hex of its trimmed lower
    case), for log lines and rate-limit keys that must never hold the address itself."""
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()
