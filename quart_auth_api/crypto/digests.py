"""Digests: one-way names for values that must never appear themselves."""

from __future__ import annotations

import hashlib


def email_digest(email: str) -> str:
    """A one-way name for an email address (SHA-256 hex of its trimmed lower case), for
    log lines and rate-limit keys that must never hold the address itself."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()
