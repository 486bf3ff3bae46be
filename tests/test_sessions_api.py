"""A user's own sessions: `GET /auth/sessions` lists the live ones (newest first, the
requesting one marked current; never a revoked or another user's one),
`DELETE /auth/sessions/{id}` ends one of them at once (another user's or an unknown id
is a 404, never a 403), and `POST /auth/logout` ends this session (`local`, the
default), every other one (`others`) or all of them (`global`). SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from quart_auth_api.db import DATABASE
from quart_auth_api.models import AuthSession, utcnow
from tests.helpers.http import bearer, claims_of, login_body, problem, register

SESSION_KEYS = {"id", "created_at", "last_used_at", "expires_at", "user_agent", "ip", "current"}


async def sessions_of(client, token: str) -> list[dict]:
    response = await client.get("/auth/sessions", headers=bearer(token))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert set(await response.get_json()) == {"sessions"}
    return list((await response.get_json())["sessions"])


def sid(token: str) -> str:
    return str(claims_of(token)["sid"])


async def works(client, token: str) -> bool:
    response = await client.get("/auth/me", headers=bearer(token))
    if response.status_code != 200:
        await problem(response, 401, "token_revoked")
    return response.status_code == 200


async def logins(client, email: str, n: int, **headers: str) -> list[str]:
    """The access tokens of `n` new logins."""
    tokens = []
    for i in range(n):
        response = await client.post(
            "/auth/login",
            json={"email": email, "password": "correct horse battery"},
            headers={"User-Agent": f"browser-{i}", **headers},
        )
        assert response.status_code == 200
        tokens.append((await response.get_json())["access_token"])
    return tokens


@pytest.fixture
async def grace(client):
    return await register(client, email="grace@example.com", name="Grace Hopper")


# -- GET /auth/sessions --------------------------------------------------------------


async def test_the_list_shows_each_live_session_newest_first(client, account):
    tokens = [account.access_token, *await logins(client, account.email, 2)]

    listed = await sessions_of(client, tokens[1])

    assert [row["id"] for row in listed] == [sid(token) for token in reversed(tokens)]
    assert all(set(row) == SESSION_KEYS for row in listed)
    created = [datetime.fromisoformat(row["created_at"]) for row in listed]
    assert created == sorted(created, reverse=True)


async def test_exactly_the_requesting_session_is_current(client, account):
    tokens = [account.access_token, *await logins(client, account.email, 2)]

    for token in tokens:
        listed = await sessions_of(client, token)
        assert [row["id"] for row in listed if row["current"]] == [sid(token)]


async def test_a_session_shows_its_user_agent_ip_and_times(client, account):
    response = await client.post(
        "/auth/login",
        json={"email": account.email, "password": account.password},
        headers={"User-Agent": "Lynx/2.9"},
        scope_base={"client": ("203.0.113.9", 4711)},
    )
    token = (await response.get_json())["access_token"]

    [row] = [row for row in await sessions_of(client, token) if row["current"]]

    assert row["user_agent"] == "Lynx/2.9" and row["ip"] == "203.0.113.9"
    created = datetime.fromisoformat(row["created_at"])
    assert datetime.fromisoformat(row["last_used_at"]) >= created
    assert datetime.fromisoformat(row["expires_at"]) > created + timedelta(days=1)
    assert created.utcoffset() == timedelta(0)


async def test_revoked_and_expired_sessions_are_not_listed(app, client, account):
    logged_out, expired, kept = await logins(client, account.email, 3)
    assert (await client.post("/auth/logout", headers=bearer(logged_out))).status_code == 200
    async with DATABASE.get(app).sessionmaker() as db:
        await db.execute(
            update(AuthSession)
            .where(AuthSession.id == uuid.UUID(sid(expired)))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await db.commit()

    listed = await sessions_of(client, kept)

    assert [row["id"] for row in listed] == [sid(kept), sid(account.access_token)]


async def test_another_users_sessions_are_not_listed(client, account, grace):
    await logins(client, grace.email, 2)

    listed = await sessions_of(client, account.access_token)

    assert [row["id"] for row in listed] == [sid(account.access_token)]


async def test_the_list_without_a_token_is_401(client):
    await problem(await client.get("/auth/sessions"), 401, "token_missing")


# -- DELETE /auth/sessions/{id} ------------------------------------------------------


async def test_deleting_another_of_your_sessions_ends_it_at_once(client, account):
    [other] = await logins(client, account.email, 1)
    refresh_of_other = await login_body(client, account.email)

    response = await client.delete(f"/auth/sessions/{sid(other)}", headers=account.auth)
    also = await client.delete(
        f"/auth/sessions/{sid(refresh_of_other['access_token'])}", headers=account.auth
    )

    assert response.status_code == 204 and await response.get_data() == b""
    assert also.status_code == 204
    assert not await works(client, other)
    refresh = await client.post("/auth/refresh", headers=bearer(refresh_of_other["refresh_token"]))
    await problem(refresh, 401, "token_revoked")
    assert await works(client, account.access_token)
    assert [row["id"] for row in await sessions_of(client, account.access_token)] == [
        sid(account.access_token)
    ]


async def test_deleting_the_current_session_ends_this_token(client, account):
    response = await client.delete(
        f"/auth/sessions/{sid(account.access_token)}", headers=account.auth
    )

    assert response.status_code == 204
    assert not await works(client, account.access_token)


async def test_deleting_another_users_session_is_404_and_it_lives_on(client, account, grace):
    response = await client.delete(
        f"/auth/sessions/{sid(grace.access_token)}", headers=account.auth
    )

    await problem(response, 404, "not_found")
    assert await works(client, grace.access_token)
    assert len(await sessions_of(client, grace.access_token)) == 1


@pytest.mark.parametrize("path", [str(uuid.uuid4()), "not-a-uuid", "123", "%27%20OR%201=1"])
async def test_deleting_an_unknown_or_malformed_id_is_404(client, account, path):
    response = await client.delete(f"/auth/sessions/{path}", headers=account.auth)

    await problem(response, 404, "not_found")
    assert await works(client, account.access_token)


async def test_deleting_a_revoked_session_is_404(client, account):
    [other] = await logins(client, account.email, 1)
    path = f"/auth/sessions/{sid(other)}"
    assert (await client.delete(path, headers=account.auth)).status_code == 204

    await problem(await client.delete(path, headers=account.auth), 404, "not_found")


async def test_deleting_without_a_token_is_401(client, account):
    response = await client.delete(f"/auth/sessions/{sid(account.access_token)}")

    await problem(response, 401, "token_missing")
    assert await works(client, account.access_token)


# -- POST /auth/logout scopes --------------------------------------------------------


async def logout(client, token: str, body: object = None, content_type: str | None = None):
    """`POST /auth/logout` as an HTTP/1.1 client sends it: a body (JSON unless
    `content_type` says otherwise) with its Content-Length, or no body at all."""
    headers = bearer(token)
    if body is None:
        return await client.post("/auth/logout", headers=headers)
    data = body if isinstance(body, str) else json.dumps(body)
    headers |= {
        "Content-Type": content_type or "application/json",
        "Content-Length": str(len(data.encode())),
    }
    return await client.post("/auth/logout", data=data, headers=headers)


@pytest.mark.parametrize("body", [None, {"scope": "local"}, {}])
async def test_logout_local_ends_only_this_session(client, account, grace, body):
    [other] = await logins(client, account.email, 1)

    response = await logout(client, account.access_token, body)

    assert response.status_code == 200
    assert await response.get_json() == {"message": "Successfully logged out."}
    assert not await works(client, account.access_token)
    assert await works(client, other)
    assert await works(client, grace.access_token)


async def test_logout_others_keeps_this_session_and_ends_the_rest(client, account, grace):
    others = await logins(client, account.email, 2)

    response = await logout(client, account.access_token, {"scope": "others"})

    assert response.status_code == 200
    assert await works(client, account.access_token)
    refreshed = await client.post("/auth/refresh", headers=account.refresh_auth)
    assert refreshed.status_code == 200
    assert [await works(client, token) for token in others] == [False, False]
    assert await works(client, grace.access_token)
    assert [row["id"] for row in await sessions_of(client, account.access_token)] == [
        sid(account.access_token)
    ]


async def test_logout_global_ends_every_session(client, account, grace):
    others = await logins(client, account.email, 2)

    response = await logout(client, account.access_token, {"scope": "global"})

    assert response.status_code == 200
    for token in [account.access_token, *others]:
        assert not await works(client, token)
    await problem(
        await client.post("/auth/refresh", headers=account.refresh_auth), 401, "token_revoked"
    )
    assert await works(client, grace.access_token)


@pytest.mark.parametrize("body", [{"scope": "everywhere"}, {"scope": "GLOBAL"}, {"scope": 1}])
async def test_logout_with_an_unknown_scope_is_422_and_ends_nothing(client, account, body):
    [other] = await logins(client, account.email, 1)

    response = await logout(client, account.access_token, body)

    err = await problem(response, 422, "validation_failed")
    assert [error["field"] for error in err["errors"]] == ["scope"]
    assert await works(client, account.access_token) and await works(client, other)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_logout_with_a_body_that_is_not_json_is_415(client, account, content_type):
    response = await logout(client, account.access_token, "scope=global", content_type)

    await problem(response, 415, "unsupported_media_type")
    assert await works(client, account.access_token)


async def test_logout_reads_a_body_sent_without_content_length(client, account):
    [other] = await logins(client, account.email, 1)

    response = await client.post("/auth/logout", json={"scope": "global"}, headers=account.auth)

    assert response.status_code == 200
    assert not await works(client, other)
