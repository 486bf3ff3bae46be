"""A database outage on real processes (PostgreSQL): the scratch database stops accepting
connections and its backends are terminated; every worker answers 503
`service_unavailable` quickly, `/healthz` stays at 200, and the same processes recover
when it is back. Dead pooled connections cost no failed token check.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from settings import to_async_url
from tests.helpers.http import PASSWORD, bearer, credentials
from tests.helpers.processes import (
    LOG_TIMEOUT,
    POLL_INTERVAL,
    SERVER_WORKERS,
    TEST_DATABASE_URL,
    Server,
    new_request_id,
    problem_code,
)

pytestmark = pytest.mark.server


#: An outage answer (503) comes within this many seconds: a bound against hanging, not
#: a performance figure.
OUTAGE_BOUND = 8.0
OUTAGE_HTTP_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
#: Fresh connections tried until every worker has answered.
WORKER_ROUNDS = 60
#: After the database is back, every worker answers 200 within this.
RECOVERY_TIMEOUT = 30.0


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
    return Probe(response, await server.pid_of(request_id), seconds)


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
        if len(seen) == SERVER_WORKERS:
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
    assert set(server.request_pids().values()) == workers, "a worker was replaced"
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
