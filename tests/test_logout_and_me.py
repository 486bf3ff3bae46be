"""GET /auth/me and POST /auth/logout: who am I, and revoking one session."""

from __future__ import annotations

from typing import Any

from tests.helpers.http import USER_KEYS, bearer, login_body, problem, register


async def rejected(response, code: str) -> dict[str, Any]:
    body = await problem(response, 401, code)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    return body


async def test_me_returns_the_current_user(client, account):
    response = await client.get("/auth/me", headers=account.auth)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = await response.get_json()
    assert body == account.user
    assert set(body) == USER_KEYS
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada Lovelace"
    text = await response.get_data(as_text=True)
    assert "$2b$" not in text and "password" not in text.lower()


async def test_me_answers_for_the_tokens_owner(client, account):
    grace = await register(client, email="grace@example.com", name="Grace Hopper")

    ada = await (await client.get("/auth/me", headers=account.auth)).get_json()
    hopper = await (await client.get("/auth/me", headers=grace.auth)).get_json()

    assert ada["id"] == account.user["id"] and ada["name"] == "Ada Lovelace"
    assert hopper["id"] == grace.user["id"] and hopper["name"] == "Grace Hopper"
    assert ada["id"] != hopper["id"]


async def test_me_without_a_token_is_401_token_missing(client):
    response = await client.get("/auth/me")

    await problem(response, 401, "token_missing")


async def test_logout_answers_200_with_a_message(client, account):
    response = await client.post("/auth/logout", headers=account.auth)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert await response.get_json() == {"message": "Successfully logged out."}


async def test_logout_without_a_token_is_401_token_missing(client):
    response = await client.post("/auth/logout")

    await problem(response, 401, "token_missing")


async def test_access_token_after_logout_is_401_token_revoked(client, account):
    assert (await client.post("/auth/logout", headers=account.auth)).status_code == 200

    await rejected(await client.get("/auth/me", headers=account.auth), "token_revoked")


async def test_refresh_token_after_logout_is_401_token_revoked(client, account):
    assert (await client.post("/auth/logout", headers=account.auth)).status_code == 200

    response = await client.post("/auth/refresh", headers=account.refresh_auth)

    await rejected(response, "token_revoked")


async def test_logout_twice_is_401_token_revoked(client, account):
    assert (await client.post("/auth/logout", headers=account.auth)).status_code == 200

    response = await client.post("/auth/logout", headers=account.auth)

    await rejected(response, "token_revoked")


async def test_logout_with_a_refreshed_access_token_revokes_the_session(client, account):
    refreshed = await (await client.post("/auth/refresh", headers=account.refresh_auth)).get_json()

    assert (
        await client.post("/auth/logout", headers=bearer(refreshed["access_token"]))
    ).status_code == 200

    await rejected(await client.get("/auth/me", headers=account.auth), "token_revoked")
    response = await client.post("/auth/refresh", headers=bearer(refreshed["refresh_token"]))
    await rejected(response, "token_revoked")


async def test_logout_of_one_session_leaves_the_others_working(client, account):
    other = await login_body(client, account.email)

    assert (await client.post("/auth/logout", headers=account.auth)).status_code == 200

    await rejected(await client.get("/auth/me", headers=account.auth), "token_revoked")
    me = await client.get("/auth/me", headers=bearer(other["access_token"]))
    assert me.status_code == 200
    assert await me.get_json() == account.user
    response = await client.post("/auth/refresh", headers=bearer(other["refresh_token"]))
    assert response.status_code == 200


async def test_logout_leaves_other_users_alone(client, account):
    grace = await register(client, email="grace@example.com")

    assert (await client.post("/auth/logout", headers=account.auth)).status_code == 200

    assert (await client.get("/auth/me", headers=grace.auth)).status_code == 200


async def test_login_after_logout_opens_a_working_session(client, account):
    assert (await client.post("/auth/logout", headers=account.auth)).status_code == 200

    tokens = await login_body(client, account.email)

    me = await client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
