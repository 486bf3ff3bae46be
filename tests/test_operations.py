"""Production operation on real processes and real databases: concurrency without loss.

`python run.py` serves two hypercorn workers on a freshly migrated database (SQLite
file, and PostgreSQL when `TEST_DATABASE_URL` is set): hundreds of registrations,
logins, refreshes and logouts racing through both workers never surface as a 5xx,
`database is locked` or a deadlock, and everything acknowledged holds afterwards,
counted exactly. A database outage is `test_outage.py`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from quart_auth_api.db import create_engine
from quart_auth_api.models import AuthSession, User
from settings import Settings
from tests.helpers.http import PASSWORD, bearer, claims_of, credentials
from tests.helpers.processes import (
    SERVER_WORKERS,
    Server,
    problem_code,
)

pytestmark = pytest.mark.server


#: Requests in flight at once, and the client's connection pool (one connection each).
IN_FLIGHT = 50
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Idle connections are dropped by the client before hypercorn's keep-alive timeout (5 s)
#: closes them, so no request races a server-side close.
CLIENT_KEEP_ALIVE = 2.0
#: The whole concurrency scenario, every phase included, ends within this.
SCENARIO_TIMEOUT = 180.0

USERS = 200
#: The first DUPLICATES emails are registered a second time (upper-cased) at once.
DUPLICATES = 100
#: The first RACED users send RACERS refreshes with one token at once.
RACED = 50
RACERS = 3
#: Words the server log must never hold after the scenario.
LOG_FORBIDDEN = ("database is locked", "deadlock", "traceback")


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    return dict(Counter(response.status_code for response in responses))


async def count_rows(database_url: str) -> dict[str, int]:
    """Users, sessions and revoked sessions, read from the database itself."""
    engine = create_engine(Settings.for_testing(database_url=database_url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return {
                "users": await connection.scalar(select(func.count()).select_from(User)),
                "sessions": await connection.scalar(select(func.count()).select_from(AuthSession)),
                "revoked": await connection.scalar(
                    select(func.count())
                    .select_from(AuthSession)
                    .where(AuthSession.revoked_at.is_not(None))
                ),
            }
    finally:
        await engine.dispose()


# -- concurrency without loss -------------------------------------------------------------


@dataclass
class Traffic:
    """Every request of the scenario goes through `send`: bounded in flight, counted."""

    client: httpx.AsyncClient
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IN_FLIGHT))
    sent: Counter[str] = field(default_factory=Counter)
    answered: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    async def send(self, phase: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.sent[phase] += 1
        async with self.gate:
            try:
                response = await self.client.request(method, path, **kwargs)
            except httpx.TransportError as error:
                raise AssertionError(
                    f"{phase}: {method} {path} got no answer ({error!r}); "
                    f"sent so far {dict(self.sent)}, answered {dict(self.answered)}"
                ) from error
        self.answered[phase][response.status_code] += 1
        return response

    def total(self) -> int:
        return sum(self.sent.values())

    def server_errors(self) -> int:
        return sum(n for tally in self.answered.values() for s, n in tally.items() if s >= 500)


@dataclass
class Account:
    email: str
    registered: dict[str, Any]
    logged_in: dict[str, Any] = field(default_factory=dict)
    refreshed: dict[str, Any] = field(default_factory=dict)
    logged_out: bool = False


def new_client(server: Server) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=IN_FLIGHT,
        max_keepalive_connections=IN_FLIGHT,
        keepalive_expiry=CLIENT_KEEP_ALIVE,
    )
    return httpx.AsyncClient(base_url=server.base_url, timeout=HTTP_TIMEOUT, limits=limits)


async def register_racing(traffic: Traffic, emails: list[str]) -> dict[str, Account]:
    """Each email once, and the first DUPLICATES again (upper-cased) right next to it:
    exactly one 201 per email, every other attempt 409 `email_taken`."""
    attempts: list[str] = []
    for index, email in enumerate(emails):
        attempts += [email, email.upper()] if index < DUPLICATES else [email]
    responses = await asyncio.gather(
        *(
            traffic.send(
                "register",
                "POST",
                "/auth/register",
                json={"email": email, "password": PASSWORD, "name": "Racer"},
            )
            for email in attempts
        )
    )
    assert statuses(responses) == {201: USERS, 409: DUPLICATES}, statuses(responses)
    winners: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for attempted, response in zip(attempts, responses, strict=True):
        if response.status_code == 409:
            assert problem_code(response) == "email_taken"
        else:
            body = response.json()
            assert body["user"]["email"] == attempted.lower()
            winners[attempted.lower()].append(body)
    assert {email: len(bodies) for email, bodies in winners.items()} == dict.fromkeys(emails, 1)
    return {email: Account(email, bodies[0]) for email, bodies in winners.items()}


async def refresh_racing(traffic: Traffic, account: Account, racers: int) -> None:
    """`racers` refreshes with one refresh token at once: all 200 within the reuse
    interval, and all carry the one new generation (exactly one rotation)."""
    token = account.logged_in["refresh_token"]
    responses = await asyncio.gather(
        *(
            traffic.send("refresh", "POST", "/auth/refresh", headers=bearer(token))
            for _ in range(racers)
        )
    )
    assert statuses(responses) == {200: racers}, [r.text for r in responses]
    generations = {claims_of(r.json()["refresh_token"])["gen"] for r in responses}
    assert generations == {1}, generations
    account.refreshed = responses[-1].json()


async def run_scenario(server: Server, emails: list[str]) -> tuple[Traffic, dict[str, Account]]:
    """Register (racing duplicates), log in, refresh (some racing), log out half."""
    async with new_client(server) as client:
        traffic = Traffic(client)
        accounts = await register_racing(traffic, emails)

        logins = await asyncio.gather(
            *(
                traffic.send("login", "POST", "/auth/login", json=credentials(email))
                for email in emails
            )
        )
        assert statuses(logins) == {200: USERS}, [r.text for r in logins if r.status_code != 200]
        for email, response in zip(emails, logins, strict=True):
            accounts[email].logged_in = response.json()

        await asyncio.gather(
            *(
                refresh_racing(traffic, accounts[email], RACERS if index < RACED else 1)
                for index, email in enumerate(emails)
            )
        )

        leaving = emails[::2]
        logouts = await asyncio.gather(
            *(
                traffic.send(
                    "logout",
                    "POST",
                    "/auth/logout",
                    headers=bearer(accounts[email].refreshed["access_token"]),
                )
                for email in leaving
            )
        )
        assert statuses(logouts) == {200: len(leaving)}, [r.text for r in logouts]
        for email in leaving:
            accounts[email].logged_out = True
    return traffic, accounts


async def verify_nothing_lost(server: Server, traffic: Traffic, accounts: dict[str, Account]):
    """On new connections: every registered user logs in; a logged-out session's
    access and refresh tokens are 401 `token_revoked`; every other session works."""
    async with new_client(server) as client:
        traffic.client = client
        logins = await asyncio.gather(
            *(
                traffic.send("verify login", "POST", "/auth/login", json=credentials(email))
                for email in accounts
            )
        )
        lost = [email for email, r in zip(accounts, logins, strict=True) if r.status_code != 200]
        assert not lost, f"{len(lost)} registered users cannot log in: {lost[:5]}"

        async def check(account: Account) -> None:
            token = account.refreshed["access_token"]
            me = await traffic.send("verify me", "GET", "/auth/me", headers=bearer(token))
            again = await traffic.send(
                "verify refresh",
                "POST",
                "/auth/refresh",
                headers=bearer(account.refreshed["refresh_token"]),
            )
            first = account.registered["access_token"]
            other = await traffic.send("verify other", "GET", "/auth/me", headers=bearer(first))
            assert other.status_code == 200, other.text
            if account.logged_out:
                old = account.logged_in["access_token"]
                login_access = await traffic.send(
                    "verify me", "GET", "/auth/me", headers=bearer(old)
                )
                for response in (me, again, login_access):
                    assert response.status_code == 401, response.text
                    assert problem_code(response) == "token_revoked"
            else:
                assert me.status_code == 200, me.text
                assert me.json()["email"] == account.email
                assert again.status_code == 200, again.text

        await asyncio.gather(*(check(account) for account in accounts.values()))


async def test_concurrent_traffic_through_two_workers_loses_nothing(two_workers, migrated_url):
    """200 registrations plus 100 racing duplicates, 200 logins, 300 refreshes (50
    users send 3 at once with one token), 100 logouts, then 900 checks on new
    connections: every count exact, no 5xx, both workers served, the log clean, and
    the database holds exactly what was acknowledged."""
    server = two_workers
    run = secrets.token_hex(4)
    emails = [f"op-{index:03d}-{run}@example.com" for index in range(USERS)]
    started = time.monotonic()

    async with asyncio.timeout(SCENARIO_TIMEOUT):
        traffic, accounts = await run_scenario(server, emails)
        await verify_nothing_lost(server, traffic, accounts)
    elapsed = time.monotonic() - started

    logged_out = sum(account.logged_out for account in accounts.values())
    expected = {
        "register": {201: USERS, 409: DUPLICATES},
        "login": {200: USERS},
        "refresh": {200: USERS + RACED * (RACERS - 1)},
        "logout": {200: logged_out},
        "verify login": {200: USERS},
        "verify me": {200: USERS - logged_out, 401: 2 * logged_out},
        "verify refresh": {200: USERS - logged_out, 401: logged_out},
        "verify other": {200: USERS},
    }
    assert {phase: dict(tally) for phase, tally in traffic.answered.items()} == expected
    assert dict(traffic.sent) == {phase: sum(t.values()) for phase, t in expected.items()}
    assert traffic.server_errors() == 0

    log = server.log()
    for word in LOG_FORBIDDEN:
        assert word not in log.lower(), f"{word!r} in the server log:\n{log}"
    workers = set(server.request_pids().values())
    assert len(workers) == SERVER_WORKERS, f"requests were served by {workers}"
    print(
        f"\n[{make_url(migrated_url).get_backend_name()}] {traffic.total()} requests "
        f"through {len(workers)} workers in {elapsed:.1f}s ({IN_FLIGHT} in flight): "
        f"5xx 0, lost users 0, revoked sessions still working 0"
    )
    rows = await count_rows(migrated_url)
    # sessions: one per registration, per login, per verification login
    assert rows == {"users": USERS, "sessions": 3 * USERS, "revoked": logged_out}
