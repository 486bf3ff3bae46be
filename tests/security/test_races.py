"""Races: duplicate accounts, double-spent refresh tokens, a refresh racing a logout.

The requests run concurrently on the test client, each with its own database session
(as separate workers would). Rate limits are turned off here
(`rate_limit_enabled=False`): a race sends more attempts from one client than the
limits allow.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from quart_auth_api.db import DATABASE
from quart_auth_api.models import AuthSession, User
from settings import Settings
from tests.helpers.attacks import refused
from tests.helpers.http import bearer, claims_of, register

RACERS = 12


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.for_testing(database_url=database_url, rate_limit_enabled=False)


async def scalar(app, statement):
    async with DATABASE.get(app).sessionmaker() as db:
        return await db.scalar(statement)


async def generation_of(app, refresh_token: str) -> int:
    sid = uuid.UUID(claims_of(refresh_token)["sid"])
    return await scalar(app, select(AuthSession.generation).where(AuthSession.id == sid))


async def test_parallel_registrations_of_one_email_make_one_account(app, client):
    """Each racer has its own password: exactly one wins, and only its password logs in."""
    emails = ["Race@Example.com" if i % 2 else "race@example.com" for i in range(RACERS)]
    passwords = [f"racer passphrase {i:02d}" for i in range(RACERS)]

    responses = await asyncio.gather(
        *(
            client.post("/auth/register", json={"email": e, "password": p, "name": "Racer"})
            for e, p in zip(emails, passwords, strict=True)
        )
    )

    statuses = [response.status_code for response in responses]
    assert sorted(statuses) == [201] + [409] * (RACERS - 1)
    for response in responses:
        if response.status_code == 409:
            assert (await response.get_json())["code"] == "email_taken"
    assert await scalar(app, select(func.count()).select_from(User)) == 1
    winner = statuses.index(201)
    loser = (winner + 1) % RACERS
    login = {"email": "race@example.com"}
    ok = await client.post("/auth/login", json={**login, "password": passwords[winner]})
    assert ok.status_code == 200
    bad = await client.post("/auth/login", json={**login, "password": passwords[loser]})
    await refused(bad, "invalid_credentials")


async def test_parallel_refreshes_with_one_token_rotate_once(app, client):
    """Within the reuse grace (default 10 s) every racer is answered with the one new
    generation; the session rotated exactly once."""
    account = await register(client)

    responses = await asyncio.gather(
        *(client.post("/auth/refresh", headers=account.refresh_auth) for _ in range(RACERS))
    )

    assert [response.status_code for response in responses] == [200] * RACERS
    tokens = [(await response.get_json())["refresh_token"] for response in responses]
    assert {claims_of(token)["gen"] for token in tokens} == {1}
    assert await generation_of(app, account.refresh_token) == 1


async def test_parallel_refreshes_without_a_grace_never_rotate_twice(build_app):
    """JWT_REFRESH_REUSE_INTERVAL=0: racers that lose are replays (the session is
    revoked) or find it revoked; none gets a second rotation."""
    app, client = await build_app(rate_limit_enabled=False, jwt_refresh_reuse_interval=0)
    account = await register(client)

    responses = await asyncio.gather(
        *(client.post("/auth/refresh", headers=account.refresh_auth) for _ in range(RACERS))
    )

    winners = [response for response in responses if response.status_code == 200]
    assert winners
    for response in winners:
        assert claims_of((await response.get_json())["refresh_token"])["gen"] == 1
    codes = set()
    for response in responses:
        if response.status_code != 200:
            codes.add((await refused(response, (await response.get_json())["code"]))["code"])
    assert codes <= {"refresh_token_reused", "token_revoked"}
    assert await generation_of(app, account.refresh_token) == 1
    if codes:  # a replay was detected: nobody keeps the session
        newest = (await winners[0].get_json())["access_token"]
        await refused(await client.get("/auth/me", headers=bearer(newest)), "token_revoked")


async def test_a_refresh_racing_a_logout_cannot_keep_the_session_alive(client):
    account = await register(client)

    refreshed, logged_out = await asyncio.gather(
        client.post("/auth/refresh", headers=account.refresh_auth),
        client.post("/auth/logout", headers=account.auth),
    )

    assert logged_out.status_code == 200
    tokens = [account.access_token]
    if refreshed.status_code == 200:
        tokens.append((await refreshed.get_json())["access_token"])
    else:
        await refused(refreshed, "token_revoked")
    for token in tokens:
        await refused(await client.get("/auth/me", headers=bearer(token)), "token_revoked")
