"""Production operation on real processes and real databases.

`python run.py` serves two hypercorn workers on a freshly migrated database (SQLite
file, and PostgreSQL when `TEST_DATABASE_URL` is set), and these tests prove what the
in-process test client cannot:

- concurrency without loss: hundreds of registrations, logins, refreshes and logouts
  racing through both workers never surface as a 5xx, `database is locked` or a
  deadlock, and everything acknowledged holds afterwards, counted exactly;
- a database outage (PostgreSQL: the scratch database stops accepting connections and
  its backends are terminated) answers 503 `service_unavailable` quickly in every
  worker, keeps `/healthz` at 200, and the same processes recover when it is back.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from quart_auth_api.db import create_engine
from quart_auth_api.models import AuthSession, User
from settings import Settings, to_async_url
from tests.conftest import PASSWORD, TEST_DATABASE_URL, claims_of
from tests.helpers import (
    LOG_LINE,
    POLL_INTERVAL,
    Server,
    new_request_id,
    production_env,
    run_alembic,
    serve,
)

pytestmark = pytest.mark.server

WORKERS = 2
#: Requests in flight at once, and the client's connection pool (one connection each).
IN_FLIGHT = 50
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Idle connections are dropped by the client before hypercorn's keep-alive timeout (5 s)
#: closes them, so no request races a server-side close.
CLIENT_KEEP_ALIVE = 2.0
#: The whole concurrency scenario, every phase included, ends within this.
SCENARIO_TIMEOUT = 180.0
LOG_TIMEOUT = 5.0

USERS = 200
#: The first DUPLICATES emails are registered a second time (upper-cased) at once.
DUPLICATES = 100
#: The first RACED users send RACERS refreshes with one token at once.
RACED = 50
RACERS = 3
#: Words the server log must never hold after the scenario.
LOG_FORBIDDEN = ("database is locked", "deadlock", "traceback")

#: An outage answer (503) comes within this many seconds: a bound against hanging, not
#: a performance figure.
OUTAGE_BOUND = 8.0
OUTAGE_HTTP_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
#: Fresh connections tried until every worker has answered.
WORKER_ROUNDS = 60
#: After the database is back, every worker answers 200 within this.
RECOVERY_TIMEOUT = 30.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def credentials(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD}


def problem_code(response: httpx.Response) -> str:
    """The `code` of a problem response (asserting it is one)."""
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.text
    assert "Traceback" not in response.text
    return str(response.json()["code"])


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    return dict(Counter(response.status_code for response in responses))


def request_pids(server: Server) -> dict[str, int]:
    """Request id -> pid of the worker that logged it, from text lines (as
    `Server.request_pids()` reads them) and from JSON lines (production's format)."""
    pids: dict[str, int] = {}
    for line in server.log().splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("pid") and record.get("request_id"):
                pids.setdefault(str(record["request_id"]), int(record["pid"]))
        elif match := LOG_LINE.search(line):
            pids.setdefault(match["request_id"], int(match["pid"]))
    pids.pop("-", None)  # lines outside a request
    return pids


async def pid_of(server: Server, request_id: str) -> int:
    """The worker pid that logged `request_id` (its line may come after the response)."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while (pid := request_pids(server).get(request_id)) is None:
        assert time.monotonic() < deadline, f"no log line for {request_id}:\n{server.log()}"
        await asyncio.sleep(POLL_INTERVAL)
    return pid


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


@pytest.fixture
def migrated_url(scratch_database_url: str) -> str:
    run_alembic(scratch_database_url, "upgrade", "head")
    return scratch_database_url


@pytest.fixture
def two_workers(migrated_url: str, tmp_path: Path) -> Iterator[Server]:
    """`QUART_ENV=production python run.py`, 2 workers, rate limits off (one client
    address sends every request here; the limits are tested in test_rate_limits.py)."""
    env = production_env(migrated_url, workers=WORKERS, RATE_LIMIT_ENABLED="false")
    with serve(env, tmp_path / "server.log") as server:
        yield server


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
    workers = set(request_pids(server).values())
    assert len(workers) == WORKERS, f"requests were served by {workers}"
    print(
        f"\n[{make_url(migrated_url).get_backend_name()}] {traffic.total()} requests "
        f"through {len(workers)} workers in {elapsed:.1f}s ({IN_FLIGHT} in flight): "
        f"5xx 0, lost users 0, revoked sessions still working 0"
    )
    rows = await count_rows(migrated_url)
    # sessions: one per registration, per login, per verification login
    assert rows == {"users": USERS, "sessions": 3 * USERS, "revoked": logged_out}


# -- database outage (PostgreSQL) -------------------------------------------------------


def admin_dsn() -> str:
    """The `postgres` maintenance database of TEST_DATABASE_URL's server."""
    base = make_url(to_async_url(TEST_DATABASE_URL))
    return base.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )


async def set_reachable(name: str, reachable: bool) -> None:
    """Let the scratch database `name` accept connections, or refuse them and end
    every connection it has (never another database)."""
    import asyncpg

    assert name.startswith("qaa_scratch_"), name
    admin = await asyncpg.connect(admin_dsn())
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(reachable).lower()}')
        if not reachable:
            await end_connections(admin, name)
    finally:
        await admin.close()


async def end_connections(admin: Any, name: str) -> None:
    """Terminate every connection to `name` (what a database restart does to them)."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name):
        assert time.monotonic() < deadline, f"connections to {name} survived termination"
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await asyncio.sleep(POLL_INTERVAL)


async def registered_token(server: Server, email: str) -> str:
    """Register `email` over HTTP; the new session's access token."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=OUTAGE_HTTP_TIMEOUT) as client:
        response = await client.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


@dataclass
class Probe:
    """One request on a new connection: the answer, the worker and how long it took."""

    response: httpx.Response
    pid: int
    seconds: float


async def probe(server: Server, method: str, path: str, **kwargs: Any) -> Probe:
    request_id = new_request_id("outage")
    headers = {"X-Request-ID": request_id, **kwargs.pop("headers", {})}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=OUTAGE_HTTP_TIMEOUT) as client:
        started = time.monotonic()
        response = await client.request(method, path, headers=headers, **kwargs)
        seconds = time.monotonic() - started
    assert response.headers["X-Request-ID"] == request_id
    return Probe(response, await pid_of(server, request_id), seconds)


async def in_every_worker(server: Server, workers: set[int], check) -> list[Probe]:
    """Run `check` (a round of probes, each on a new connection) until every worker in
    `workers` has answered every request of the round."""
    seen: dict[str, set[int]] = defaultdict(set)
    probes: list[Probe] = []
    for _ in range(WORKER_ROUNDS):
        round_probes = await check()
        probes += round_probes
        for result in round_probes:
            request = result.response.request
            seen[f"{request.method} {request.url.path}"].add(result.pid)
        if all(pids >= workers for pids in seen.values()):
            return probes
    missing = {request: workers - pids for request, pids in seen.items() if workers - pids}
    raise AssertionError(f"never answered by some workers: {missing}\n{server.log()}")


async def worker_pids(server: Server) -> set[int]:
    """Both workers' pids, found by asking `/healthz` on new connections."""
    seen: set[int] = set()
    for _ in range(WORKER_ROUNDS):
        seen.add((await probe(server, "GET", "/healthz")).pid)
        if len(seen) == WORKERS:
            return seen
    raise AssertionError(f"only workers {seen} answered:\n{server.log()}")


def assert_unavailable(result: Probe) -> None:
    """A 503 problem `service_unavailable` with Retry-After, within OUTAGE_BOUND."""
    response = result.response
    assert response.status_code == 503, response.text
    assert problem_code(response) == "service_unavailable"
    assert response.json()["request_id"] == response.headers["X-Request-ID"]
    assert int(response.headers["Retry-After"]) > 0
    assert result.seconds < OUTAGE_BOUND, f"503 after {result.seconds:.1f}s"


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL")
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_database_outage_is_503_and_the_same_processes_recover(two_workers, migrated_url):
    """While the database refuses connections: /auth/me, /auth/login and
    /auth/register answer 503 `service_unavailable` (with Retry-After) in under 8 s,
    /readyz 503 and /healthz 200, in both workers. When it accepts them again, both
    workers answer /readyz and /auth/me (with a token from before) 200, log in and
    register, without a restart."""
    server = two_workers
    name = make_url(migrated_url).database
    assert name is not None
    token = await registered_token(server, "outage@example.com")
    workers = await worker_pids(server)

    async def down_in_one_worker() -> list[Probe]:
        me = await probe(server, "GET", "/auth/me", headers=bearer(token))
        login = await probe(server, "POST", "/auth/login", json=credentials("outage@example.com"))
        register = await probe(
            server,
            "POST",
            "/auth/register",
            json={"email": f"late-{me.pid}@example.com", "password": PASSWORD, "name": "Late"},
        )
        ready = await probe(server, "GET", "/readyz")
        health = await probe(server, "GET", "/healthz")
        for result in (me, login, register, ready):
            assert_unavailable(result)
        assert health.response.status_code == 200, health.response.text
        return [me, login, register, ready, health]

    await set_reachable(name, False)
    try:
        down = await in_every_worker(server, workers, down_in_one_worker)
    finally:
        await set_reachable(name, True)
    back_at = time.monotonic()

    ready_after = await first_200(server, "GET", "/readyz", back_at)
    me_after = await first_200(server, "GET", "/auth/me", back_at, headers=bearer(token))

    async def up_in_one_worker() -> list[Probe]:
        results = [
            await probe(server, "GET", "/readyz"),
            await probe(server, "GET", "/auth/me", headers=bearer(token)),
            await probe(server, "POST", "/auth/login", json=credentials("outage@example.com")),
            await probe(
                server,
                "POST",
                "/auth/register",
                json={
                    "email": f"{new_request_id('back')}@example.com",
                    "password": PASSWORD,
                    "name": "Back",
                },
            ),
        ]
        answers = [result.response.status_code for result in results]
        assert answers == [200, 200, 200, 201], [result.response.text for result in results]
        return results

    up = await in_every_worker(server, workers, up_in_one_worker)

    assert server.process.poll() is None
    assert set(request_pids(server).values()) == workers, "a worker was replaced"
    slowest = max(p.seconds for p in down if p.response.status_code == 503)
    print(
        f"\n[postgresql outage] {len(down)} requests during the outage in {len(workers)} "
        f"workers, slowest 503 {slowest:.2f}s; after ALLOW_CONNECTIONS true: /readyz 200 "
        f"in {ready_after:.2f}s, /auth/me 200 in {me_after:.2f}s; {len(up)} requests "
        "after recovery all 200/201, same pids"
    )


async def first_200(server: Server, method: str, path: str, since: float, **kwargs: Any) -> float:
    """Seconds from `since` until `method path` on a new connection answers 200."""
    while True:
        result = await probe(server, method, path, **kwargs)
        if result.response.status_code == 200:
            return time.monotonic() - since
        assert result.response.status_code == 503, result.response.text
        assert time.monotonic() - since < RECOVERY_TIMEOUT, (
            f"{path} still {result.response.status_code} {RECOVERY_TIMEOUT}s after the "
            f"database came back:\n{server.log()}"
        )
        await asyncio.sleep(POLL_INTERVAL)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL")
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_dead_pooled_connections_cost_no_failed_token_check(two_workers, migrated_url):
    """Pooled connections are not pinged before use (DB_POOL_PRE_PING=false): when the
    database ends them (a restart, a failover), the guard's read finds its connection
    dead, and runs again on a new one. /auth/me answers 200 at once in both workers."""
    import asyncpg

    server = two_workers
    name = make_url(migrated_url).database
    assert name is not None and name.startswith("qaa_scratch_"), name
    token = await registered_token(server, "restart@example.com")
    workers = await worker_pids(server)

    async def me_in_one_worker() -> list[Probe]:
        return [await probe(server, "GET", "/auth/me", headers=bearer(token))]

    before = await in_every_worker(server, workers, me_in_one_worker)  # pools now hold connections
    assert all(result.response.status_code == 200 for result in before)
    admin = await asyncpg.connect(admin_dsn())
    try:
        await end_connections(admin, name)
    finally:
        await admin.close()
    seen: set[int] = set()
    for _ in range(WORKER_ROUNDS):
        result = await probe(server, "GET", "/auth/me", headers=bearer(token))
        assert result.response.status_code == 200, (result.pid, result.response.text)
        seen.add(result.pid)
        if seen == workers:
            break
    assert seen == workers, f"never answered by {workers - seen}"
