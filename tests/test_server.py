"""The real server: `python run.py` under hypercorn, spoken to over HTTP.

Production runs two workers, so these tests also prove what only real processes
can: a logout served by one worker is refused by the other, because revocation
lives in the database and not in a worker's memory.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.http import PASSWORD
from tests.helpers.processes import (
    DOTENV,
    PROJECT_ROOT,
    Server,
    free_port,
    new_request_id,
    production_env,
    run_alembic,
    serve,
    service_env,
)

pytestmark = pytest.mark.server

HTTP_TIMEOUT = 10.0
CROSS_WORKER_ATTEMPTS = 60
CONFIG_ERROR_TIMEOUT = 20.0


@pytest.fixture
def production_server(scratch_database_url: str, tmp_path: Path) -> Iterator[Server]:
    """`QUART_ENV=production python run.py` with 2 workers on a migrated database."""
    run_alembic(scratch_database_url, "upgrade", "head")
    with serve(production_env(scratch_database_url), tmp_path / "server.log") as server:
        yield server


@pytest.fixture
def development_server(tmp_path: Path) -> Iterator[Server]:
    """`python run.py` with nothing configured but where to listen and which database."""
    database_url = f"sqlite:///{tmp_path / 'dev.db'}"
    run_alembic(database_url, "upgrade", "head")
    env = service_env(HOST="127.0.0.1", PORT=str(free_port()), DATABASE_URL=database_url)
    if DOTENV.exists():  # a developer's .env fills whatever the environment leaves unset
        env.update(QUART_ENV="development", WEB_CONCURRENCY="1")
    with serve(env, tmp_path / "server.log") as server:
        yield server


# -- helpers ------------------------------------------------------------------------


def bearer(token: str, request_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return headers


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """`response` is the RFC 9457 problem for `status` / `code`, with its request id."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return body


def assert_token_body(response: httpx.Response, status: int, email: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["token_type"] == "Bearer"
    assert body["access_token"] and body["refresh_token"]
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["user"]["email"] == email
    return body


async def register(client: httpx.AsyncClient, request_id: str | None = None) -> dict[str, Any]:
    email = f"user-{secrets.token_hex(5)}@example.com"
    headers = {"X-Request-ID": request_id} if request_id else {}
    response = await client.post(
        "/auth/register",
        json={"email": email, "password": PASSWORD, "name": "Ada Lovelace"},
        headers=headers,
    )
    return assert_token_body(response, 201, email)


async def until_another_worker(
    server: Server, method: str, path: str, token: str, *, not_pid: int
) -> list[tuple[int, httpx.Response]]:
    """Send `method path` with `token`, each time on a new connection, until a worker
    other than `not_pid` answers; every (pid, response) on the way."""
    answers = []
    for attempt in range(CROSS_WORKER_ATTEMPTS):
        request_id = new_request_id(f"probe{attempt}")
        async with httpx.AsyncClient(base_url=server.base_url, timeout=HTTP_TIMEOUT) as client:
            response = await client.request(method, path, headers=bearer(token, request_id))
        pid = await server.pid_of(request_id)
        answers.append((pid, response))
        if pid != not_pid:
            break
    return answers


def run_until_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python run.py` that is expected to stop on its own."""
    return subprocess.run(
        [sys.executable, "run.py"],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CONFIG_ERROR_TIMEOUT,
        check=False,
    )


# -- production: the full flow --------------------------------------------------------


async def test_full_flow_over_http(production_server):
    """Register, log in, ask who I am, refresh (rotating), log out; then the session's
    access tokens (from login and from refresh) are 401 `token_revoked` problems with
    a Bearer challenge."""
    async with httpx.AsyncClient(
        base_url=production_server.base_url, timeout=HTTP_TIMEOUT
    ) as client:
        registered = await register(client)
        email = registered["user"]["email"]

        response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
        tokens = assert_token_body(response, 200, email)

        response = await client.get("/auth/me", headers=bearer(tokens["access_token"]))
        assert response.status_code == 200, response.text
        assert response.json()["email"] == email

        response = await client.post("/auth/refresh", headers=bearer(tokens["refresh_token"]))
        refreshed = assert_token_body(response, 200, email)
        assert refreshed["refresh_token"] != tokens["refresh_token"]

        response = await client.post("/auth/logout", headers=bearer(refreshed["access_token"]))
        assert response.status_code == 200, response.text
        assert response.json() == {"message": "Successfully logged out."}

        for old_access_token in (tokens["access_token"], refreshed["access_token"]):
            response = await client.get("/auth/me", headers=bearer(old_access_token))
            assert_problem(response, 401, "token_revoked")


# -- production: two workers share the revocation --------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "token_kind"),
    [("GET", "/auth/me", "access_token"), ("POST", "/auth/refresh", "refresh_token")],
    ids=["access", "refresh"],
)
async def test_logout_in_one_worker_is_refused_by_the_other(
    production_server, method, path, token_kind
):
    """After a logout served by one worker, the session's tokens are 401 `token_revoked`
    in every worker: fresh connections are sent until the other worker has answered."""
    server = production_server
    async with httpx.AsyncClient(base_url=server.base_url, timeout=HTTP_TIMEOUT) as client:
        tokens = await register(client)
        logout_id = new_request_id("logout")
        response = await client.post(
            "/auth/logout", headers=bearer(tokens["access_token"], logout_id)
        )
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == logout_id
    logout_pid = await server.pid_of(logout_id)

    answers = await until_another_worker(
        server, method, path, tokens[token_kind], not_pid=logout_pid
    )

    for _pid, response in answers:
        assert_problem(response, 401, "token_revoked")
    assert answers[-1][0] != logout_pid, (
        f"all {len(answers)} requests went to worker {logout_pid}:\n{server.log()}"
    )


# -- development ---------------------------------------------------------------------


async def test_development_serves_with_no_configuration(development_server):
    """`python run.py` with no secrets and no QUART_ENV starts in development and
    answers `GET /` and `GET /healthz`."""
    async with httpx.AsyncClient(
        base_url=development_server.base_url, timeout=HTTP_TIMEOUT
    ) as client:
        index = await client.get("/", headers={"Accept": "application/json"})
        health = await client.get("/healthz")

    assert index.status_code == 200, index.text
    assert index.json()["docs_url"] == "/docs"
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert "(development)" in development_server.log()


# -- bad settings ----------------------------------------------------------------------


STRONG = secrets.token_urlsafe(48)[:48]


@pytest.mark.parametrize(
    ("values", "unset", "named"),
    [
        ({"PORT": "notanumber"}, (), {"PORT"}),
        ({"QUART_ENV": "staging"}, (), {"QUART_ENV"}),
        ({"DATABASE_URL": "mysql://db/app"}, (), {"DATABASE_URL"}),
        (
            {"QUART_ENV": "production"},
            ("SECRET_KEY", "JWT_SECRET_KEY"),
            {"SECRET_KEY", "JWT_SECRET_KEY"},
        ),
        (
            {"QUART_ENV": "production", "SECRET_KEY": STRONG},
            ("JWT_SECRET_KEY",),
            {"JWT_SECRET_KEY"},
        ),
    ],
    ids=["port", "env", "database-url", "no-secrets", "no-jwt-secret"],
)
def test_bad_setting_stops_startup_with_one_line(values, unset, named):
    """A bad or missing setting makes `run.py` exit non-zero at once; the last line of
    stderr is `config error: VARIABLE: message` naming it, and there is no traceback."""
    if unset and DOTENV.exists():
        pytest.skip(f"the developer's .env may set {', '.join(unset)}")
    env = service_env(**{"HOST": "127.0.0.1", "PORT": str(free_port()), **values})

    result = run_until_exit(env)

    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    prefix, variable, message = [*last_line.split(": ", 2), "", ""][:3]
    assert prefix == "config error", result.stderr
    assert variable in named, result.stderr
    assert message, result.stderr
