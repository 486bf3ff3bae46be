"""Passwords: bcrypt hashing and checking, off the event loop.

Only bcrypt's own 72-byte limit applies: a longer password is never hashed (registration
refuses it in the schema; bcrypt would silently truncate it), and never matches (no
account can have one), though checking it costs the same time as any other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bcrypt

log = logging.getLogger(__name__)

BCRYPT_MAX_BYTES = 72
#: How much nicer than the event loop a hashing thread is (Linux: per thread).
HASHING_NICENESS = 10


class PasswordHasher:
    """bcrypt off the event loop, in a pool bounded to `threads` workers.

    On Linux the pool's threads run at a lower CPU priority (nice +10) than the event
    loop: they still take every core nothing else wants, but when logins saturate the
    CPU, the scheduler runs the loop first, so token checks and other cheap requests
    keep their latency instead of queuing behind a quarter second of bcrypt each.
    """

    def __init__(self, *, rounds: int, threads: int) -> None:
        self.rounds = rounds
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="bcrypt", initializer=_lower_priority
        )
        self._dummy_hash: bytes | None = None

    async def hash(self, password: str) -> str:
        hashed: bytes = await self._run(
            bcrypt.hashpw, _encode(password), bcrypt.gensalt(self.rounds)
        )
        return hashed.decode("ascii")

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check a password; with no hash, or a password longer than any account can
        have, spend the same time and answer False."""
        encoded = password.encode("utf-8")
        if hashed is None or len(encoded) > BCRYPT_MAX_BYTES:
            await self._run(bcrypt.checkpw, encoded[:BCRYPT_MAX_BYTES], await self._dummy())
            return False
        matches: bool = await self._run(bcrypt.checkpw, _encode(password), hashed.encode("ascii"))
        return matches

    def needs_rehash(self, hashed: str) -> bool:
        """True when the hash was made with a lower cost than the current setting."""
        try:
            return int(hashed.split("$")[2]) < self.rounds
        except (IndexError, ValueError):
            return True

    async def warm_up(self) -> None:
        """Make the dummy hash before the first login, so no login pays for it (an
        unknown email would otherwise cost one extra hash, once per worker)."""
        await self._dummy()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _dummy(self) -> bytes:
        if self._dummy_hash is None:
            salt = bcrypt.gensalt(self.rounds)
            self._dummy_hash = await self._run(bcrypt.hashpw, secrets.token_bytes(16), salt)
        return self._dummy_hash

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)


def _lower_priority() -> None:
    """Make the calling thread (only it: Linux schedules threads one by one) nicer."""
    if sys.platform != "linux":  # elsewhere PRIO_PROCESS would renice the whole process
        return
    thread = threading.get_native_id()
    try:
        nice = os.getpriority(os.PRIO_PROCESS, thread)  # inherited from the loop's thread
        os.setpriority(os.PRIO_PROCESS, thread, min(19, nice + HASHING_NICENESS))
    except OSError:  # e.g. a seccomp profile forbids it: hashing still works
        log.warning("could not lower the priority of the hashing threads")


def _encode(password: str) -> bytes:
    encoded = password.encode("utf-8")
    if len(encoded) > BCRYPT_MAX_BYTES:  # the schemas refuse it first; never truncate
        raise ValueError("password longer than 72 bytes")
    return encoded
