"""Sealing of secrets the service must read back (the TOTP secrets): Fernet
(AES-128-CBC with HMAC-SHA256, from cryptography), never a home-made cipher.

One key seals, and it and older ones open (`MultiFernet`), so the key can rotate: a
secret opened with an older key is reported as such, and its owner re-seals it under
the current one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

#: Raw bytes of a Fernet key (its URL-safe base64 text is 44 characters).
KEY_BYTES = 32


class SealError(Exception):
    """A sealed value that none of the keys opens (tampered, or its key is gone)."""


class InvalidSealingKey(ValueError):
    """Key material that is not a Fernet key."""


def fernet_key(raw: bytes) -> bytes:
    """A Fernet key from 32 raw bytes (e.g. an HKDF output)."""
    if len(raw) != KEY_BYTES:
        raise InvalidSealingKey(f"needs {KEY_BYTES} bytes")
    return base64.urlsafe_b64encode(raw)


def checked_key(text: str) -> bytes:
    """A Fernet key given as text (URL-safe base64 of 32 bytes), checked."""
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidSealingKey("must be URL-safe base64 (Fernet.generate_key())") from None
    if len(raw) != KEY_BYTES or len(text) != 44:
        raise InvalidSealingKey("must be 32 bytes in URL-safe base64 (Fernet.generate_key())")
    return text.encode("ascii")


class Sealer:
    """Seals with `keys[0]`; opens with any of `keys`."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise InvalidSealingKey("at least one key is needed")
        self._current = Fernet(keys[0])
        self._all = MultiFernet([Fernet(key) for key in keys])

    def seal(self, plaintext: str) -> str:
        return self._all.encrypt(plaintext.encode()).decode("ascii")

    def open(self, sealed: str) -> tuple[str, bool]:
        """The plaintext, and whether it was sealed under the current key (False: an
        older key opened it, re-seal it); `SealError` when no key opens it."""
        token = sealed.encode("ascii")
        try:
            return self._current.decrypt(token).decode(), True
        except InvalidToken:
            pass
        try:
            return self._all.decrypt(token).decode(), False
        except InvalidToken:
            raise SealError() from None
