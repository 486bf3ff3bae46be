"""GET /, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import threading

import pytest

from quart_auth_api import __version__, create_app
from settings import Settings
from tests.helpers.http import problem


async def test_index_json_for_api_clients(client):
    response = await client.get("/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert await response.get_json() == {
        "name": "quart-auth-api",
        "version": __version__,
        "docs_url": "/docs",
        "openapi_url": "/openapi.json",
    }


async def test_index_json_for_curl_default_accept(client):
    response = await client.get("/", headers={"Accept": "*/*"})
    assert response.status_code == 200
    assert (await response.get_json())["docs_url"] == "/docs"


async def test_index_redirects_a_browser_to_docs(client):
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = await client.get("/", headers={"Accept": accept})
    assert response.status_code == 302
    assert response.headers["Location"] == "/docs"


async def test_healthz_is_ok(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}


async def test_readyz_checks_the_database(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}


UNREACHABLE = [
    "postgresql://postgres@127.0.0.1:1/nothing",  # nothing listens on port 1
    "sqlite:////nonexistent-directory/app.db",  # cannot be opened
    "postgresql://postgres@nonexistent.invalid/nothing",  # a name that does not resolve
]


@pytest.fixture(
    params=UNREACHABLE, ids=["postgresql-down", "sqlite-unopenable", "postgresql-unresolvable"]
)
async def down_client(request):
    app = create_app(Settings.for_testing(database_url=request.param))
    async with app.test_app():
        yield app.test_client()
    await aiosqlite_threads_finished()


async def aiosqlite_threads_finished() -> None:
    """Let aiosqlite's worker threads finish while this test's loop still runs.

    After a failed connect, aiosqlite queues its thread's stop without awaiting it;
    the thread then answers on the loop, which must not be closed by then.
    """
    for _ in range(500):  # at most ~5 s
        if not any("_connection_worker_thread" in t.name for t in threading.enumerate()):
            return
        await asyncio.sleep(0.01)


async def test_database_down_readyz_is_503_and_healthz_stays_200(down_client):
    await problem(await down_client.get("/readyz"), 503, "service_unavailable")
    assert (await down_client.get("/healthz")).status_code == 200


async def test_database_down_login_is_503_problem(down_client):
    response = await down_client.post(
        "/auth/login", json={"email": "ada@example.com", "password": "correct horse"}
    )
    body = await problem(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "127.0.0.1" not in str(body) and "nonexistent" not in str(body)
