"""The second factor's figures (issue 14), this service only (the Flask reference has no
MFA), per backend, on one server and a fresh database:

1. `POST /auth/mfa/challenge` latency (p50, p99, mean) of its success path, from a client
   in this process, one request at a time; each sample has a fresh `mfa_token` (a password
   login, not timed) and the code of a time step its user has not passed yet. Baseline:
   `POST /auth/login` (password only, users without a factor) timed the same way,
   interleaved (challenge, login, challenge, ...), in rounds: the ratio challenge/login of
   each round's medians.
2. `GET /auth/me` req/s with the access tokens of users with a TOTP factor (`aal2`, from the
   challenges of 1) against those of users without one, wrk, interleaved rounds.

    python -m bench.run --mfa           # `make bench-mfa`: only these figures
    python -m bench.run --mfa --smoke   # SQLite, 1 worker, a second or so per figure

`make bench` measures them too, after the comparison with Flask.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import itertools
import json
import math
import statistics
import struct
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from bench.common import HTTP_TIMEOUT, PASSWORD, TOKEN_KEYS, BenchError
from bench.harness import Server, fresh_database
from bench.rounds import spread
from bench.seed import call, write_lines
from bench.suite import Bench, Plan

STEP_SECONDS = 30
DIGITS = 6
#: The challenge figure of one backend stops with an error past this (waits included).
CHALLENGE_TIMEOUT = 600.0
POPULATIONS = ("plain", "factor")


# -- TOTP, as the service computes it (quart_auth_api/crypto/totp.py; no pyotp here) ----


def totp_code(secret: str, step: int) -> str:
    """RFC 6238 with RFC 4226's truncation: HMAC-SHA-1, 6 digits, of one 30-second step."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**DIGITS:0{DIGITS}d}"


def current_step() -> int:
    return int(time.time()) // STEP_SECONDS


def spent_step(secret: str, step: int) -> int:
    """The step the service records for the code of `step`: the latest step near it with
    the same code (two steps share a code once in a million)."""
    code = totp_code(secret, step)
    return max(s for s in range(step, step + 3) if totp_code(secret, s) == code)


@dataclass
class FactorUser:
    email: str
    secret: str
    last_step: int  # the latest step the service has accepted for this user
    passes: int = 0
    access_token: str | None = None


def claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified (to check what the service minted)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


# -- requests -------------------------------------------------------------------------------


def timed_post(base_url: str, path: str, body: dict[str, str]) -> tuple[int, Any, float]:
    """POST on a new connection (connected before the clock starts): status, JSON, ms
    from sending the request to having read the whole answer."""
    parts = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=HTTP_TIMEOUT
    )
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    try:
        connection.connect()
        started = time.perf_counter()
        connection.request("POST", path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        connection.close()
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    return response.status, answer, elapsed


def enrol(base_url: str, email: str, access_token: str) -> FactorUser:
    """POST /auth/mfa/totp, then /verify with the code of the current step."""
    status, body = call(base_url, "POST", "/auth/mfa/totp", token=access_token)
    if status != 201 or not isinstance(body, dict) or "secret" not in body:
        raise BenchError(f"enrol {email}: {status} {body}")
    step = current_step()
    proof = {"factor_id": body["factor_id"], "code": totp_code(body["secret"], step)}
    status, done = call(base_url, "POST", "/auth/mfa/totp/verify", body=proof, token=access_token)
    if status != 200 or not isinstance(done, dict) or "recovery_codes" not in done:
        raise BenchError(f"confirm the factor of {email}: {status} {done}")
    return FactorUser(email, body["secret"], spent_step(body["secret"], step))


def mfa_token(base_url: str, user: FactorUser) -> str:
    status, body = call(
        base_url, "POST", "/auth/login", body={"email": user.email, "password": PASSWORD}
    )
    if status != 200 or not isinstance(body, dict) or body.get("mfa_required") is not True:
        raise BenchError(f"login of {user.email} (with a factor): {status} {body}")
    return str(body["mfa_token"])


def pass_challenge(base_url: str, user: FactorUser, token: str) -> float:
    """POST /auth/mfa/challenge with the code of the first step after the user's last one
    (never earlier than now: at most now + 1, which the service accepts); the ms it took."""
    step = max(user.last_step + 1, current_step())
    body = {"mfa_token": token, "code": totp_code(user.secret, step)}
    status, answer, elapsed = timed_post(base_url, "/auth/mfa/challenge", body)
    if status != 200 or not isinstance(answer, dict) or not set(answer) >= TOKEN_KEYS:
        raise BenchError(f"challenge of {user.email} at step {step}: {status} {answer}")
    user.last_step, user.passes = spent_step(user.secret, step), user.passes + 1
    user.access_token = answer["access_token"]
    return elapsed


def ready_users(users: list[FactorUser], count: int, deadline: float) -> list[FactorUser]:
    """`count` users who can pass a challenge now (their last step is not ahead of the
    clock), the least used first; waits for the next time step when too few can."""
    for _ in range(3):
        now = current_step()
        ready = sorted((u for u in users if u.last_step <= now), key=lambda u: u.passes)
        if len(ready) >= count:
            return ready[:count]
        wait = (now + 1) * STEP_SECONDS - time.time() + 0.1
        if time.monotonic() + wait > deadline:
            break
        time.sleep(max(0.0, wait))
    raise BenchError(f"fewer than {count} users with a factor can pass a challenge now")


# -- the figures ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it
    (of 120 samples, p99 is the second largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency(values: list[float]) -> dict[str, float]:
    return {
        "samples": len(values),
        "p50_ms": round(statistics.median(values), 3),
        "p99_ms": round(percentile(values, 0.99), 3),
        "mean_ms": round(statistics.fmean(values), 3),
        "max_ms": round(max(values), 3),
    }


def challenge_latency(
    bench: Bench, server: Server, users: list[FactorUser], plain: list[str]
) -> dict[str, Any]:
    """Figure 1: rounds of (challenge, login) pairs; each round's mfa_tokens come first,
    from logins in parallel (not timed), then the pairs, one request at a time."""
    plan = bench.plan
    deadline = time.monotonic() + CHALLENGE_TIMEOUT
    edges = [plan.mfa_samples * n // plan.mfa_rounds for n in range(plan.mfa_rounds + 1)]
    times: dict[str, list[float]] = {"challenge": [], "login": []}
    rounds = []
    logins = itertools.cycle(plain)
    for number in range(1, plan.mfa_rounds + 1):
        picked = ready_users(users, edges[number] - edges[number - 1], deadline)
        with ThreadPoolExecutor(min(16, 4 * server.workers)) as pool:
            tokens = list(pool.map(lambda u: mfa_token(server.base_url, u), picked))
        bench.drain(server)
        row: dict[str, list[float]] = {"challenge": [], "login": []}
        for user, token in zip(picked, tokens, strict=True):  # A B A B ...
            row["challenge"].append(pass_challenge(server.base_url, user, token))
            email = next(logins)
            status, body, elapsed = timed_post(
                server.base_url, "/auth/login", {"email": email, "password": PASSWORD}
            )
            if status != 200 or not isinstance(body, dict) or not set(body) >= TOKEN_KEYS:
                raise BenchError(f"login of {email}: {status} {body}")
            row["login"].append(elapsed)
            if time.monotonic() > deadline:
                raise BenchError(f"challenge figure: not done in {CHALLENGE_TIMEOUT:.0f}s")
        medians = {kind: statistics.median(values) for kind, values in row.items()}
        ratio = medians["challenge"] / medians["login"]
        rounds.append({**{k: round(v, 3) for k, v in medians.items()}, "ratio": round(ratio, 4)})
        bench.say(
            f"  challenge #{number}: {len(picked)} pairs, median challenge "
            f"{medians['challenge']:.2f} ms, login {medians['login']:.2f} ms, "
            f"ratio {ratio:.3f}"
        )
        for kind, values in row.items():
            times[kind].extend(values)
    return {
        "challenge": latency(times["challenge"]),
        "login": latency(times["login"]),
        "ratio": spread([r["ratio"] for r in rounds]),
        "rounds": rounds,
    }


def me_rounds(bench: Bench, server: Server, files: dict[str, Any]) -> dict[str, Any]:
    """Figure 2: GET /auth/me, the tokens of one population then the other, rounds times."""
    plan = bench.plan
    loads = {
        kind: bench.load("me", connections=plan.connections, lines=files[kind])
        for kind in POPULATIONS
    }
    for load in loads.values():
        bench.wrk.run(server.base_url, replace(load, duration=bench.warmup))
    rounds = []
    for number in range(1, plan.mfa_rounds + 1):
        row = {}
        for kind in POPULATIONS:
            run = bench.run_load(server, loads[kind], f"GET /auth/me {kind} #{number}")
            if run.requests != run.ok:
                raise BenchError(f"GET /auth/me ({kind}): {run.requests - run.ok} errors")
            row[kind] = {"rps": round(run.rps, 2), "p99_ms": run.latency_ms["p99"]}
        rounds.append(row)
    summary: dict[str, Any] = {
        kind: {
            "rps": spread([r[kind]["rps"] for r in rounds]),
            "p99_ms_median": round(statistics.median(r[kind]["p99_ms"] for r in rounds), 3),
        }
        for kind in POPULATIONS
    }
    summary["ratio"] = spread([r["factor"]["rps"] / r["plain"]["rps"] for r in rounds])
    summary["rounds"] = rounds
    return summary


def check_tokens(base_url: str, tokens: dict[str, list[str]]) -> None:
    """Each population's tokens are what the figure says: aal1 without a factor, aal2
    (pwd, otp) with one; and /auth/me answers them."""
    want = {"plain": ("aal1", ["pwd"]), "factor": ("aal2", ["pwd", "otp"])}
    for kind, found in tokens.items():
        for token in found:
            got = claims(token)
            if (got.get("aal"), got.get("amr")) != want[kind]:
                raise BenchError(f"{kind} token: aal {got.get('aal')}, amr {got.get('amr')}")
        status, body = call(base_url, "GET", "/auth/me", token=found[0])
        if status != 200:
            raise BenchError(f"GET /auth/me ({kind}): {status} {body}")


def measure_backend(bench: Bench, backend: str) -> dict[str, Any]:
    plan = bench.plan
    with (
        fresh_database(backend, "mfa", bench.work, bench.pg) as url,
        bench.server("service", url, plan.workers, f"{backend}-mfa") as server,
    ):
        plain, plain_files = bench.seed(server, plan.seed_users, f"mfa-plain-{backend}")
        factor_seed, _ = bench.seed(server, plan.seed_users, f"mfa-factor-{backend}")
        started = time.monotonic()
        with ThreadPoolExecutor(min(16, 4 * server.workers)) as pool:
            users = list(
                pool.map(
                    lambda pair: enrol(server.base_url, *pair),
                    zip(factor_seed.emails, factor_seed.access_tokens, strict=True),
                )
            )
        bench.say(
            f"  service enrolled {len(users)} TOTP factors in {time.monotonic() - started:.1f}s"
        )
        challenge = challenge_latency(bench, server, users, plain.emails)
        deadline = time.monotonic() + CHALLENGE_TIMEOUT
        for user in [u for u in users if u.access_token is None]:  # not passed in figure 1
            ready_users([user], 1, deadline)
            pass_challenge(server.base_url, user, mfa_token(server.base_url, user))
        tokens = {"plain": plain.access_tokens, "factor": [u.access_token or "" for u in users]}
        check_tokens(server.base_url, tokens)
        factor_file = plain_files["access"].with_name("factor-access.txt")
        files = {
            "plain": plain_files["access"],
            "factor": write_lines(factor_file, tokens["factor"]),
        }
        me = me_rounds(bench, server, files)
    return {
        "users": {"plain": len(plain.emails), "factor": len(users)},
        "challenge": challenge,
        "me": me,
    }


def plan_problem(plan: Plan) -> str | None:
    """What is wrong with the plan's MFA options (a round's users must be distinct)."""
    if not 1 <= plan.mfa_rounds <= plan.mfa_samples <= plan.mfa_rounds * plan.seed_users:
        return "needs 1 <= --mfa-rounds <= --mfa-samples <= --mfa-rounds x --seed-users"
    return None


def measure(bench: Bench) -> dict[str, Any]:
    """Both figures on every backend of the plan."""
    plan = bench.plan
    results = {}
    for backend in plan.backends:
        bench.say(
            f"mfa on {backend}: {plan.workers} worker(s), bcrypt cost {plan.bcrypt_rounds}, "
            f"{plan.seed_users} users without a factor and {plan.seed_users} with one; "
            f"challenge: {plan.mfa_samples} samples (each with a login) in {plan.mfa_rounds} "
            f"rounds, 1 request at a time; /auth/me: {plan.connections} connections, "
            f"{plan.mfa_rounds} rounds of {plan.duration:g}s each"
        )
        results[backend] = measure_backend(bench, backend)
    return {"backends": results}


# -- told -------------------------------------------------------------------------------------

CHALLENGE_LABELS = (("challenge", "POST /auth/mfa/challenge"), ("login", "POST /auth/login"))
ME_LABELS = (("plain", "without a factor"), ("factor", "with a factor (aal2)"))


def ratio_text(r: dict[str, float]) -> str:
    return f"{r['median']:.3f} ({r['min']:.3f}–{r['max']:.3f})"


def report_lines(result: dict[str, Any]) -> list[str]:
    """The printed figures (bench/report.py puts them after the comparison with Flask)."""
    lines = ["MFA, this service only, interleaved rounds (a ratio: median of the rounds', min-max)"]
    for backend, found in result["backends"].items():
        c, me, users = found["challenge"], found["me"], found["users"]
        lines.append(
            f"{backend}: {users['factor']} users with a TOTP factor, {users['plain']} without"
        )
        for kind, label in CHALLENGE_LABELS:
            x = c[kind]
            lines.append(
                f"  {label:26} p50 {x['p50_ms']:8.2f} ms  p99 {x['p99_ms']:8.2f} ms  "
                f"mean {x['mean_ms']:8.2f} ms  ({x['samples']} samples)"
            )
        lines.append(f"  challenge/login, p50 of a round: {ratio_text(c['ratio'])}")
        for kind, label in ME_LABELS:
            x = me[kind]
            lines.append(
                f"  GET /auth/me {label:21} {x['rps']['median']:9,.1f} req/s median "
                f"({x['rps']['min']:,.1f}-{x['rps']['max']:,.1f}), p99 {x['p99_ms_median']:.2f} ms"
            )
        lines.append(f"  /auth/me req/s with/without a factor: {ratio_text(me['ratio'])}")
    return lines


def markdown_lines(result: dict[str, Any]) -> list[str]:
    """The README block's MFA table."""
    lines = [
        "MFA (this service only), interleaved rounds; a ratio is the median of the rounds' "
        "(min–max):",
        "",
        "| backend | challenge p50 / p99 / mean (ms) | login p50 / p99 (ms) | challenge/login "
        "| /auth/me without a factor (req/s) | with one (aal2) | with/without |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, found in result["backends"].items():
        c, me = found["challenge"], found["me"]
        ch, lo = c["challenge"], c["login"]
        lines.append(
            f"| {backend} | {ch['p50_ms']:.2f} / {ch['p99_ms']:.2f} / {ch['mean_ms']:.2f} "
            f"| {lo['p50_ms']:.2f} / {lo['p99_ms']:.2f} | {ratio_text(c['ratio'])} "
            f"| {me['plain']['rps']['median']:,.0f} | {me['factor']['rps']['median']:,.0f} "
            f"| {ratio_text(me['ratio'])} |"
        )
    return lines
