"""What every part of the benchmark shares: paths, limits, errors, running a command."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = PROJECT_ROOT / "bench"
REFERENCE_DIR = BENCH_DIR / "flask_reference"
CEILING_DIR = BENCH_DIR / "ceiling"
WRK_DIR = BENCH_DIR / "wrk"

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
SETUP_TIMEOUT = 120.0
PSQL_TIMEOUT = 600.0
HTTP_TIMEOUT = 60.0
WRK_GRACE = 60.0
#: wrk's per-request timeout: a queued request counts, however slow, instead of vanishing.
WRK_REQUEST_TIMEOUT = "30s"
APT_TIMEOUT = 600.0

PASSWORD = "correct horse battery staple"  # noqa: S105 (the seeded accounts' password)
TOKEN_KEYS = {"user", "access_token", "refresh_token", "token_type", "expires_in"}
#: What both sides' `User` has (this service adds `email_verified` and `email_verified_at`).
USER_KEYS = {"id", "email", "name", "created_at", "updated_at"}
DB_NAME_RE = re.compile(r"qaa_bench_[a-z0-9_]{1,40}")
SIDES = ("service", "flask")
#: The third side: bare Quart + hypercorn + uvloop, JWT decode only (bench/ceiling/).
CEILING = "ceiling"
ALL_SIDES = (*SIDES, CEILING)


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


class WrkMissing(BenchError):
    """wrk is not installed and cannot be installed here."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_checked(args: list[str], *, timeout: float, **kwargs: Any) -> str:
    """Run a command to completion within `timeout`; its stdout, or BenchError with its output."""
    try:
        result = subprocess.run(  # noqa: S603 (argument lists built here)
            args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(args[:4])} ...: no answer within {timeout:.0f}s") from None
    if result.returncode != 0:
        raise BenchError(
            f"{' '.join(args[:4])} ... exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout
