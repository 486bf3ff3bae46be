"""TOTP as RFC 6238 has it and nothing looser: HMAC-SHA-1, 6 digits, 30-second steps, at
most one step of drift either way; and the recovery codes that stand in for it.

A code is matched to its time step (`matching_step`), never just accepted: the caller
stores the last accepted step and refuses any code of that step or an earlier one, so a
code seen once (over a shoulder, in a log, by a phishing proxy) is spent for good.
Recovery codes are stored only as their SHA-256 digest: 16 characters of a 31-letter
alphabet (79 bits) need no key and no slow hash to stay unguessable from a copy of the
database.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
from datetime import datetime

import pyotp
import segno

DIGITS = 6
STEP_SECONDS = 30
#: Steps of clock drift accepted either way (RFC 6238 5.2 recommends at most one).
DRIFT = 1
#: Base32 characters of a secret: 32 x 5 bits = 160 bits, RFC 4226's recommended length.
SECRET_LENGTH = 32
RECOVERY_CODES = 10
#: No 0/o, 1/l/i: a code is read off paper and typed back.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_GROUPS, RECOVERY_GROUP_LENGTH = 4, 4


def new_secret() -> str:
    """A fresh TOTP secret (base32, 160 bits)."""
    return pyotp.random_base32(SECRET_LENGTH)


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The `otpauth://totp/...` URI an authenticator app reads (from the QR code)."""
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The URI as a QR code: one SVG document (with its namespace, so that it renders as
    an image too; no XML declaration, no script, no link)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(
        buffer, kind="svg", xmldecl=False, svgns=True, svgclass=None, lineclass=None, scale=4
    )
    return buffer.getvalue().decode()


def time_step(now: datetime) -> int:
    """The RFC 6238 counter of a moment: whole 30-second steps since the epoch."""
    return int(now.timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    """The code of one time step (what an authenticator shows during it)."""
    return str(_totp(secret).generate_otp(step))


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step within `DRIFT` of now whose code `code` is, or None.

    Every candidate is compared, in constant time, whatever matched first: how long
    this takes says nothing about which step (if any) the code belongs to.
    """
    current = time_step(now)
    found: int | None = None
    for step in range(current - DRIFT, current + DRIFT + 1):
        if hmac.compare_digest(code_at(secret, step).encode(), code.encode()):
            found = step
    return found


def new_recovery_codes() -> list[str]:
    """Ten fresh recovery codes as shown to the user: `xxxx-xxxx-xxxx-xxxx`."""
    return [
        "-".join(
            "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_GROUP_LENGTH))
            for _ in range(RECOVERY_GROUPS)
        )
        for _ in range(RECOVERY_CODES)
    ]


def recovery_digest(code: str) -> str:
    """The stored name of a recovery code (SHA-256 hex), whatever case, spaces or hyphens
    it was typed with."""
    normalized = "".join(code.split()).replace("-", "").lower()
    return hashlib.sha256(normalized.encode()).hexdigest()
