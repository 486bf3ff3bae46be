"""GET /, /healthz and /readyz."""

from __future__ import annotations

from quart_auth_api import __version__


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
