"""Stolen tokens replayed after logout and after a refresh rotated them.

Every protected request checks its session in the database, so a logout is final at
once, and a refresh token older than the reuse grace revokes the whole session. A few
requests per test: the default rate limits stay on.
"""

from __future__ import annotations

import pytest

from tests.helpers.attacks import refused
from tests.helpers.http import bearer, claims_of, register


async def logout(client, access_token: str):
    response = await client.post("/auth/logout", headers=bearer(access_token))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert await response.get_json() == {"message": "Successfully logged out."}


async def rotate(client, refresh_token: str) -> dict:
    response = await client.post("/auth/refresh", headers=bearer(refresh_token))
    assert response.status_code == 200, await response.get_data(as_text=True)
    return await response.get_json()


@pytest.mark.parametrize(
    ("token", "method", "path"),
    [
        pytest.param("access", "GET", "/auth/me", id="access-on-me"),
        pytest.param("access", "POST", "/auth/logout", id="access-on-logout-again"),
        pytest.param("refresh", "POST", "/auth/refresh", id="refresh-on-refresh"),
    ],
)
async def test_a_token_replayed_after_logout_is_revoked(client, token, method, path):
    account = await register(client)
    await logout(client, account.access_token)
    stolen = account.access_token if token == "access" else account.refresh_token

    response = await client.open(path, method=method, headers=bearer(stolen))

    await refused(response, "token_revoked")


async def test_a_refresh_token_replayed_after_rotation_revokes_the_session(build_app):
    """JWT_REFRESH_REUSE_INTERVAL=0: the first refresh token, once rotated, is a replay;
    the replay revokes the session, so the thief and the owner are both logged out."""
    _, client = await build_app(jwt_refresh_reuse_interval=0)
    account = await register(client)
    current = await rotate(client, account.refresh_token)

    replay = await client.post("/auth/refresh", headers=account.refresh_auth)

    await refused(replay, "refresh_token_reused")
    await refused(
        await client.post("/auth/refresh", headers=bearer(current["refresh_token"])),
        "token_revoked",
    )
    await refused(
        await client.get("/auth/me", headers=bearer(current["access_token"])), "token_revoked"
    )


async def test_a_refresh_token_two_rotations_old_is_a_replay_even_within_the_grace(client):
    """The default 10 s grace honours only the previous generation, never an older one."""
    account = await register(client)
    first = await rotate(client, account.refresh_token)
    second = await rotate(client, first["refresh_token"])
    assert claims_of(second["refresh_token"])["gen"] == 2

    replay = await client.post("/auth/refresh", headers=account.refresh_auth)

    await refused(replay, "refresh_token_reused")
    await refused(
        await client.get("/auth/me", headers=bearer(second["access_token"])), "token_revoked"
    )


async def test_within_the_grace_the_previous_token_rotates_nothing(client):
    """Two tabs refreshing at once: the previous refresh token gets the current
    generation's tokens and the session is not rotated a second time."""
    account = await register(client)
    current = await rotate(client, account.refresh_token)

    again = await rotate(client, account.refresh_token)

    assert claims_of(again["refresh_token"])["gen"] == claims_of(current["refresh_token"])["gen"]
    assert claims_of(again["refresh_token"])["gen"] == 1
    assert (
        await client.get("/auth/me", headers=bearer(current["access_token"]))
    ).status_code == 200
