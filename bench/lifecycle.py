"""The account lifecycle's two figures, against a real server (production settings,
SQLite, one worker, mail through a local SMTP server: aiosmtpd in this process):

1. Enumeration by timing: `POST /auth/password/forgot` for an unknown, an inactive and a
   known address, interleaved (each round asks for all three in a shuffled order, so the
   machine's drift falls on all three alike); the median of each, and the ratios
   unknown/known and inactive/known with their min–max over blocks of 50 rounds.
2. An SMTP outage: the SMTP server is stopped, one forgot-password request is sent for each
   of N accounts (how many answered, and how fast), the server is started again, and the
   mail is counted as it arrives (all of it? any twice?).

    make bench-lifecycle                          # python -m bench.lifecycle
    python -m bench.lifecycle --rounds 300 --outage-accounts 40

Needs the project's `.venv` with requirements-dev.txt (aiosmtpd, httpx). Every wait is
bounded; the server binds 127.0.0.1 on a free port and is stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

from bench.common import PASSWORD, BenchError, free_port
from bench.harness import Sides, service_variables, start_server

BLOCK = 50
ARRIVAL_TIMEOUT = 180.0  # the first retry comes 30 s after the failed attempt, the next 60 s later


class Inbox:
    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []  # (to, subject)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = message_from_bytes(envelope.content)
        self.received.append((str(parsed["To"]), str(parsed["Subject"])))
        return "250 OK"


class Smtp:
    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def register(http: httpx.Client, email: str) -> None:
    body = {"email": email, "password": PASSWORD, "name": "Bench"}
    response = http.post("/auth/register", json=body)
    if response.status_code != 201:
        raise BenchError(f"register {email}: {response.status_code} {response.text}")


def forgot(http: httpx.Client, email: str) -> tuple[int, float]:
    started = time.perf_counter()
    response = http.post("/auth/password/forgot", json={"email": email})
    return response.status_code, (time.perf_counter() - started) * 1000


def wait_for(smtp: Smtp, count: int, timeout: float) -> float:
    started = time.monotonic()
    while len(smtp.inbox.received) < count:
        if time.monotonic() - started > timeout:
            raise BenchError(f"only {len(smtp.inbox.received)} of {count} mails in {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timing(http: httpx.Client, rounds: int, addresses: dict[str, str]) -> dict[str, Any]:
    """Interleaved rounds: each asks for every kind of address once, in a shuffled order."""
    times: dict[str, list[float]] = {kind: [] for kind in addresses}
    shuffle = random.Random(20261202)  # noqa: S311 (an order, not a secret)
    for _ in range(20):  # warm-up, not counted
        for email in addresses.values():
            forgot(http, email)
    for _ in range(rounds):
        kinds = list(addresses)
        shuffle.shuffle(kinds)
        for kind in kinds:
            status, elapsed = forgot(http, addresses[kind])
            if status != 202:
                raise BenchError(f"forgot ({kind}): {status}")
            times[kind].append(elapsed)
    result: dict[str, Any] = {
        kind: {
            "median_ms": statistics.median(values),
            "p25_ms": percentile(values, 0.25),
            "p75_ms": percentile(values, 0.75),
        }
        for kind, values in times.items()
    }
    for kind in ("unknown", "inactive"):
        blocks = [
            statistics.median(times[kind][i : i + BLOCK])
            / statistics.median(times["known"][i : i + BLOCK])
            for i in range(0, rounds - BLOCK + 1, BLOCK)
        ]
        result[f"ratio_{kind}_to_known"] = {
            "median": statistics.median(times[kind]) / statistics.median(times["known"]),
            "min": min(blocks),
            "max": max(blocks),
        }
    return result


def failed_attempts(log_path: Path) -> int:
    """The sender's `mail N: attempt K failed` lines so far."""
    text = log_path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "attempt" in line and "failed" in line)


def outage(
    http: httpx.Client, smtp: Smtp, accounts: list[str], down: float, log_path: Path
) -> dict[str, Any]:
    before = len(smtp.inbox.received)
    smtp.stop()
    answers = [forgot(http, email) for email in accounts]
    time.sleep(down)  # the sender tries (and fails) while the server is down
    failed = failed_attempts(log_path)
    smtp.start()
    restarted = time.monotonic()
    arrival = wait_for(smtp, before + len(accounts), ARRIVAL_TIMEOUT)
    time.sleep(5)  # anything sent twice would arrive now
    resets = Counter(
        to for to, subject in smtp.inbox.received[before:] if subject == "Reset your password"
    )
    latencies = [elapsed for _, elapsed in answers]
    return {
        "requests": len(accounts),
        "smtp_down_seconds": down,
        "failed_attempts_while_down": failed,
        "answered_202": sum(1 for status, _ in answers if status == 202),
        "answer_p50_ms": statistics.median(latencies),
        "answer_p99_ms": percentile(latencies, 0.99),
        "delivered": sum(resets.values()),
        "accounts_with_their_mail": sum(1 for email in accounts if resets[email] >= 1),
        "duplicates": sum(count - 1 for count in resets.values() if count > 1),
        "seconds_to_all_after_restart": arrival,
        "seconds_since_restart": time.monotonic() - restarted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--outage-accounts", type=int, default=40)
    parser.add_argument("--outage-seconds", type=float, default=10.0, help="SMTP down this long")
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.rounds < BLOCK:
        parser.error(f"--rounds must be at least {BLOCK}")
    python = Path(sys.executable)
    sides = Sides(python, python, "sync", args.bcrypt_rounds, service_variables(python))
    smtp = Smtp()
    smtp.start()
    work = Path(tempfile.mkdtemp(prefix="qaa-lifecycle-"))
    database = work / "app.db"
    mail = {
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_SECURITY": "none",
        "SMTP_TIMEOUT": "2",
        "FRONTEND_URL": "https://app.example.com",
    }
    log(f"setup: 1 worker, SQLite, bcrypt cost {args.bcrypt_rounds}, SMTP on :{smtp.port}")
    try:
        with (
            start_server(
                sides, "service", f"sqlite:///{database}", 1, work / "server.log", extra_env=mail
            ) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            accounts = [f"outage{n}@bench.example.com" for n in range(args.outage_accounts)]
            for email in ["known@bench.example.com", "inactive@bench.example.com", *accounts]:
                register(http, email)
            with sqlite3.connect(database) as db:  # an account an operator disabled
                db.execute("UPDATE users SET is_active = 0 WHERE email LIKE 'inactive@%'")
            wait_for(smtp, 2 + len(accounts), 60)  # the verification mails
            addresses = {
                "known": "known@bench.example.com",
                "unknown": "nobody@bench.example.com",
                "inactive": "inactive@bench.example.com",
            }
            log(f"timing: {args.rounds} interleaved rounds of {', '.join(addresses)}")
            result: dict[str, Any] = {"timing": timing(http, args.rounds, addresses)}
            wait_for(smtp, 2 + len(accounts) + 20 + args.rounds, ARRIVAL_TIMEOUT)
            log(f"outage: SMTP stopped, {len(accounts)} forgot-password requests, SMTP started")
            result["outage"] = outage(
                http, smtp, accounts, args.outage_seconds, work / "server.log"
            )
    finally:
        smtp.stop()
    report(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def report(result: dict[str, Any]) -> None:
    timing_result = result["timing"]
    for kind in ("known", "unknown", "inactive"):
        row = timing_result[kind]
        log(
            f"  forgot {kind:8} median {row['median_ms']:.2f} ms "
            f"(p25 {row['p25_ms']:.2f}, p75 {row['p75_ms']:.2f})"
        )
    for kind in ("unknown", "inactive"):
        ratio = timing_result[f"ratio_{kind}_to_known"]
        log(
            f"  ratio {kind}/known: {ratio['median']:.3f} "
            f"(blocks of {BLOCK}: {ratio['min']:.3f}–{ratio['max']:.3f})"
        )
    o = result["outage"]
    log(
        f"  outage: {o['answered_202']}/{o['requests']} answered 202 while SMTP was down "
        f"(p50 {o['answer_p50_ms']:.1f} ms, p99 {o['answer_p99_ms']:.1f} ms); "
        f"{o['failed_attempts_while_down']} failed attempts in "
        f"{o['smtp_down_seconds']:.0f} s down; "
        f"{o['delivered']} delivered after the restart, {o['accounts_with_their_mail']} "
        f"accounts got theirs, {o['duplicates']} duplicates; all in "
        f"{o['seconds_to_all_after_restart']:.1f} s after the restart"
    )


if __name__ == "__main__":
    sys.exit(main())
