"""POST /auth/refresh: rotation, the reuse interval, replay detection and token types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from quart_auth_api import create_app
from settings import Settings
from tests.helpers.http import PASSWORD, TOKEN_BODY_KEYS, bearer, claims_of, problem, register


async def refresh(client, token: str):
    return await client.post("/auth/refresh", headers=bearer(token))


async def refreshed(client, token: str) -> dict[str, Any]:
    response = await refresh(client, token)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return dict(await response.get_json())


async def rejected(response, code: str) -> dict[str, Any]:
    body = await problem(response, 401, code)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    return body


@pytest.fixture
async def strict_client(database_url: str) -> AsyncIterator[Client]:
    """A client of an app with JWT_REFRESH_REUSE_INTERVAL=0: any old token is a replay."""
    app = create_app(Settings.for_testing(database_url=database_url, jwt_refresh_reuse_interval=0))
    async with app.test_app():
        yield app.test_client()


async def test_refresh_answers_200_with_new_tokens(client, account):
    response = await refresh(client, account.refresh_token)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = await response.get_json()
    assert set(body) == TOKEN_BODY_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["user"] == account.user
    assert body["access_token"] != account.access_token
    assert body["refresh_token"] != account.refresh_token
    me = await client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200


async def test_refresh_response_is_not_cacheable(client, account):
    response = await refresh(client, account.refresh_token)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


async def test_refresh_keeps_the_session_and_bumps_the_generation(client, account):
    body = await refreshed(client, account.refresh_token)

    old, access, new = (
        claims_of(account.refresh_token),
        claims_of(body["access_token"]),
        claims_of(body["refresh_token"]),
    )
    assert access["sid"] == new["sid"] == old["sid"]
    assert access["sub"] == new["sub"] == account.user["id"]
    assert (old["gen"], new["gen"]) == (0, 1)
    assert new["jti"] != old["jti"]


async def test_access_token_from_a_refresh_is_not_fresh(client, account):
    assert claims_of(account.access_token)["fresh"] is True

    body = await refreshed(client, account.refresh_token)

    assert claims_of(body["access_token"])["fresh"] is False


async def test_refresh_chain_keeps_working(client, account):
    token = account.refresh_token
    for generation in range(1, 5):
        body = await refreshed(client, token)
        token = body["refresh_token"]
        assert claims_of(token)["gen"] == generation


async def test_refresh_with_access_token_is_401(client, account):
    response = await refresh(client, account.access_token)

    await rejected(response, "wrong_token_type")


async def test_refresh_without_a_token_is_401_token_missing(client):
    response = await client.post("/auth/refresh")

    await problem(response, 401, "token_missing")
    assert "error=" not in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/auth/me"), ("POST", "/auth/logout")])
async def test_refresh_token_on_an_access_route_is_401(client, account, method, path):
    response = await client.open(path, method=method, headers=account.refresh_auth)

    await rejected(response, "wrong_token_type")
    # and the session was not touched
    assert (await client.get("/auth/me", headers=account.auth)).status_code == 200


async def test_previous_refresh_token_within_the_reuse_interval_gets_current_tokens(
    client, account
):
    current = await refreshed(client, account.refresh_token)

    again = await refreshed(client, account.refresh_token)

    assert claims_of(again["refresh_token"])["gen"] == 1
    assert claims_of(again["access_token"])["sid"] == claims_of(current["access_token"])["sid"]
    assert claims_of(again["access_token"])["fresh"] is False
    me = await client.get("/auth/me", headers=bearer(again["access_token"]))
    assert me.status_code == 200


async def test_reuse_within_the_interval_rotates_nothing(client, account):
    current = await refreshed(client, account.refresh_token)

    # several tabs with the old token: each answers generation 1, none rotates
    for _ in range(3):
        again = await refreshed(client, account.refresh_token)
        assert claims_of(again["refresh_token"])["gen"] == 1

    # the current token still rotates normally, from 1 to 2
    newest = await refreshed(client, current["refresh_token"])
    assert claims_of(newest["refresh_token"])["gen"] == 2


async def test_token_two_generations_old_is_a_replay_even_within_the_interval(client, account):
    first = await refreshed(client, account.refresh_token)
    second = await refreshed(client, first["refresh_token"])

    response = await refresh(client, account.refresh_token)

    await rejected(response, "refresh_token_reused")
    await rejected(await refresh(client, second["refresh_token"]), "token_revoked")
    await rejected(
        await client.get("/auth/me", headers=bearer(second["access_token"])), "token_revoked"
    )


async def test_old_refresh_token_after_the_interval_is_a_replay(strict_client):
    account = await register(strict_client, email="ada@example.com")
    await refreshed(strict_client, account.refresh_token)

    response = await refresh(strict_client, account.refresh_token)

    body = await rejected(response, "refresh_token_reused")
    assert "access_token" not in body


async def test_replay_revokes_the_whole_session(strict_client):
    account = await register(strict_client, email="ada@example.com")
    current = await refreshed(strict_client, account.refresh_token)
    await rejected(await refresh(strict_client, account.refresh_token), "refresh_token_reused")

    await rejected(await refresh(strict_client, current["refresh_token"]), "token_revoked")
    for token in (current["access_token"], account.access_token):
        response = await strict_client.get("/auth/me", headers=bearer(token))
        await rejected(response, "token_revoked")


async def test_replay_leaves_the_users_other_sessions_alone(strict_client):
    account = await register(strict_client, email="ada@example.com")
    other = await strict_client.post(
        "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    other_tokens = await other.get_json()
    await refreshed(strict_client, account.refresh_token)
    await rejected(await refresh(strict_client, account.refresh_token), "refresh_token_reused")

    me = await strict_client.get("/auth/me", headers=bearer(other_tokens["access_token"]))
    assert me.status_code == 200
    await refreshed(strict_client, other_tokens["refresh_token"])


async def test_current_refresh_token_still_rotates_with_no_reuse_interval(strict_client):
    account = await register(strict_client, email="ada@example.com")
    first = await refreshed(strict_client, account.refresh_token)

    second = await refreshed(strict_client, first["refresh_token"])

    assert claims_of(second["refresh_token"])["gen"] == 2


async def test_refresh_after_logout_is_401_token_revoked(client, account):
    logout = await client.post("/auth/logout", headers=account.auth)
    assert logout.status_code == 200

    await rejected(await refresh(client, account.refresh_token), "token_revoked")


async def test_refresh_after_logout_with_a_rotated_token_is_401_token_revoked(client, account):
    current = await refreshed(client, account.refresh_token)
    logout = await client.post("/auth/logout", headers=bearer(current["access_token"]))
    assert logout.status_code == 200

    await rejected(await refresh(client, current["refresh_token"]), "token_revoked")
    await rejected(await refresh(client, account.refresh_token), "token_revoked")
