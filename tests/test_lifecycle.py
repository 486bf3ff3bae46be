"""Start-up and shutdown of the real server (`python run.py` under hypercorn).

- SIGTERM lets an in-flight request finish within `GRACEFUL_TIMEOUT` (read from the
  settings and handed to hypercorn), refuses new connections, and exits 0;
- start-up stops at once with one `schema error: ...` line when the database's schema
  is behind the migrations, and `DB_AUTO_MIGRATE=true` applies them first and serves.

Each runs on SQLite and, when `TEST_DATABASE_URL` is set, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from quart_auth_api.migrate import alembic_config
from settings import Settings
from tests.helpers.http import PASSWORD
from tests.helpers.processes import (
    PROJECT_ROOT,
    Server,
    new_request_id,
    production_env,
    run_alembic,
    serve,
)

pytestmark = pytest.mark.server

#: bcrypt cost for the slow login: a hash or a check then takes a second or more.
SLOW_BCRYPT_ROUNDS = "14"
GRACEFUL_TIMEOUT = "15"
SLOW_HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: A login sent this long ago is still in bcrypt (which takes far longer at 14 rounds).
IN_FLIGHT_DELAY = 0.3
#: hypercorn's workers look at the shutdown event every 0.1 s; this leaves a margin.
SHUTDOWN_NOTICE = 0.5
EXIT_TIMEOUT = 30.0
#: `run.py` on a database behind the migrations stops within this.
SCHEMA_ERROR_TIMEOUT = 20.0


def credentials(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD}


def revisions() -> tuple[str, str | None]:
    """The migrations' head and the revision just before it (None if there is none)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(Settings.for_testing()))
    head = script.get_current_head()
    assert head is not None
    down = script.get_revision(head).down_revision
    assert down is None or isinstance(down, str), down
    return head, down


HEAD, BEHIND = revisions()
#: Where the database starts: empty, or one migration behind the head.
STARTING_POINTS = pytest.mark.parametrize(
    "start_at",
    [None, pytest.param(BEHIND, marks=pytest.mark.skipif(BEHIND is None, reason="1 migration"))],
    ids=["empty", "one-behind"],
)


def slow_env(database_url: str, *, workers: int, graceful_timeout: str) -> dict[str, str]:
    """Production settings where a login spends a second or more in bcrypt."""
    env = production_env(database_url, workers=workers, RATE_LIMIT_ENABLED="false")
    env.update(BCRYPT_ROUNDS=SLOW_BCRYPT_ROUNDS, GRACEFUL_TIMEOUT=graceful_timeout)
    return env


def migrate_to(database_url: str, revision: str | None) -> None:
    if revision is not None:
        run_alembic(database_url, "upgrade", revision)


async def register(server: Server, email: str) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=SLOW_HTTP_TIMEOUT) as client:
        response = await client.post(
            "/auth/register", json={**credentials(email), "name": "Slow Poke"}
        )
    assert response.status_code == 201, response.text


async def start_login(server: Server, email: str) -> tuple[asyncio.Task[httpx.Response], str]:
    """A login on its own connection, known to be in flight (sent, not yet answered)."""
    request_id = new_request_id("in-flight")
    client = httpx.AsyncClient(base_url=server.base_url, timeout=SLOW_HTTP_TIMEOUT)

    async def login() -> httpx.Response:
        async with client:
            return await client.post(
                "/auth/login", json=credentials(email), headers={"X-Request-ID": request_id}
            )

    task = asyncio.create_task(login())
    await asyncio.sleep(IN_FLIGHT_DELAY)
    assert not task.done(), task.result().text
    assert request_id not in server.log(), "the login was answered before SIGTERM"
    return task, request_id


async def new_connection_outcome(server: Server) -> str:
    """What a request on a new connection gets: `answered <status>`, `refused` (the
    connection itself failed) or `cut <error>` (connected, then no answer)."""
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=httpx.Timeout(EXIT_TIMEOUT)
    ) as client:
        try:
            response = await client.get("/healthz")
        except httpx.ConnectError:
            return "refused"
        except httpx.TransportError as error:
            return f"cut {error!r}"
    return f"answered {response.status_code}"


def assert_clean_exit(server: Server) -> None:
    """Exited 0 on its own within EXIT_TIMEOUT, and nothing went wrong on the way out
    (the engine is disposed in `after_serving`; a failure there is an ERROR line)."""
    code = server.process.wait(EXIT_TIMEOUT)
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


# -- SIGTERM ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_lets_an_in_flight_login_finish(scratch_database_url, tmp_path, workers):
    """A login in bcrypt when SIGTERM arrives still answers 200 with tokens, in every
    worker count; a new connection after SIGTERM is refused (not left hanging); the
    server exits 0 well within GRACEFUL_TIMEOUT with a clean log."""
    run_alembic(scratch_database_url, "upgrade", "head")
    env = slow_env(scratch_database_url, workers=workers, graceful_timeout=GRACEFUL_TIMEOUT)
    email = f"{new_request_id('slow')}@example.com"
    with serve(env, tmp_path / "server.log") as server:
        await register(server, email)
        login, request_id = await start_login(server, email)

        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(SHUTDOWN_NOTICE)
        response, late = await asyncio.gather(
            login, new_connection_outcome(server), return_exceptions=True
        )

        assert isinstance(response, httpx.Response), f"in-flight login cut: {response!r}"
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == request_id
        body = response.json()
        assert body["user"]["email"] == email
        assert body["access_token"] and body["refresh_token"]
        assert late == "refused", f"a new connection after SIGTERM: {late}"
        await asyncio.to_thread(assert_clean_exit, server)
        assert await new_connection_outcome(server) == "refused"


async def test_graceful_timeout_zero_cuts_in_flight_requests(tmp_path):
    """GRACEFUL_TIMEOUT reaches hypercorn: with 0, SIGTERM cuts the in-flight login
    instead of waiting for it (no token body), and the server still exits 0."""
    database_url = f"sqlite:///{tmp_path / 'grace.db'}"
    run_alembic(database_url, "upgrade", "head")
    env = slow_env(database_url, workers=1, graceful_timeout="0")
    email = f"{new_request_id('cut')}@example.com"
    with serve(env, tmp_path / "server.log") as server:
        await register(server, email)
        login, _request_id = await start_login(server, email)

        server.process.send_signal(signal.SIGTERM)
        outcome = (await asyncio.gather(login, return_exceptions=True))[0]
        await asyncio.to_thread(server.process.wait, EXIT_TIMEOUT)

    # hypercorn cancels the request: the connection drops, or hypercorn itself answers
    # a bare 500 (not the app's problem document: no request id)
    if isinstance(outcome, httpx.Response):
        assert outcome.status_code == 500, outcome.text
        assert "X-Request-ID" not in outcome.headers
    else:
        assert isinstance(outcome, httpx.TransportError), repr(outcome)


# -- schema behind the migrations ---------------------------------------------------------


@STARTING_POINTS
def test_schema_behind_stops_startup_with_one_line(scratch_database_url, start_at):
    """On a database that is empty or a migration behind, `run.py` exits non-zero within
    20 s; the last stderr line is `schema error: ...` naming both revisions, with no
    traceback, and nothing was migrated."""
    migrate_to(scratch_database_url, start_at)

    result = subprocess.run(
        [sys.executable, "run.py"],
        cwd=PROJECT_ROOT,
        env=production_env(scratch_database_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SCHEMA_ERROR_TIMEOUT,
        check=False,
    )

    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("schema error: "), result.stderr
    assert f"at {start_at or 'nothing'}," in last_line, last_line
    assert f"migrations at {HEAD}" in last_line, last_line
    assert "DB_AUTO_MIGRATE" in last_line, last_line
    current = run_alembic(scratch_database_url, "current").stdout.strip()
    assert current == (start_at or ""), current


@STARTING_POINTS
async def test_auto_migrate_applies_migrations_then_serves(
    scratch_database_url, tmp_path: Path, start_at
):
    """With DB_AUTO_MIGRATE=true the same start-up migrates to the head, then two
    workers serve: /readyz 200, a registration 201, and `alembic current` is the head."""
    migrate_to(scratch_database_url, start_at)
    env = production_env(scratch_database_url, workers=2, DB_AUTO_MIGRATE="true")

    with serve(env, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
            ready = await client.get("/readyz")
            registered = await client.post(
                "/auth/register",
                json={**credentials("migrated@example.com"), "name": "Ada"},
            )

    assert ready.status_code == 200, ready.text
    assert registered.status_code == 201, registered.text
    current = run_alembic(scratch_database_url, "current").stdout.strip()
    assert current == f"{HEAD} (head)", current
