"""Races on real, separate database connections (one AsyncSession per request)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from quart_auth_api.db import DATABASE
from quart_auth_api.models import AuthSession, User
from settings import Settings
from tests.helpers.http import PASSWORD, claims_of, register

RACERS = 20


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Races send more attempts from one client than the rate limits allow (those are
    tested in test_rate_limits.py): turned off here."""
    return Settings.for_testing(database_url=database_url, rate_limit_enabled=False)


async def scalar(app, statement):
    async with DATABASE.get(app).sessionmaker() as db:
        return await db.scalar(statement)


async def test_parallel_refreshes_with_one_token_rotate_once(app, client):
    """20 refreshes with one token: no 5xx, one rotation, the rest honoured."""
    account = await register(client)
    responses = await asyncio.gather(
        *(client.post("/auth/refresh", headers=account.refresh_auth) for _ in range(RACERS))
    )
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * RACERS
    sid = uuid.UUID(claims_of(account.refresh_token)["sid"])
    assert await scalar(app, select(AuthSession.generation).where(AuthSession.id == sid)) == 1
    generations = {claims_of((await r.get_json())["refresh_token"])["gen"] for r in responses}
    assert generations == {1}
    newest = (await responses[0].get_json())["refresh_token"]
    again = await client.post("/auth/refresh", headers={"Authorization": f"Bearer {newest}"})
    assert again.status_code == 200


async def test_parallel_registrations_with_one_email_create_one_user(app, client):
    """20 registrations of one email (in varied case): exactly one 201, the rest 409."""
    emails = ["RACE@Example.COM" if i % 2 else "race@example.com" for i in range(RACERS)]
    responses = await asyncio.gather(
        *(
            client.post(
                "/auth/register", json={"email": email, "password": PASSWORD, "name": "Racer"}
            )
            for email in emails
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * (RACERS - 1)
    for response in responses:
        if response.status_code == 409:
            assert (await response.get_json())["code"] == "email_taken"
    assert await scalar(app, select(func.count()).select_from(User)) == 1
    assert await scalar(app, select(func.count()).select_from(AuthSession)) == 1


async def test_parallel_logins_open_parallel_sessions(app, client):
    """20 concurrent logins of one user each open their own live session."""
    account = await register(client)
    responses = await asyncio.gather(
        *(
            client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
            for _ in range(RACERS)
        )
    )
    assert [response.status_code for response in responses] == [200] * RACERS
    sids = {claims_of((await r.get_json())["access_token"])["sid"] for r in responses}
    assert len(sids) == RACERS
    assert await scalar(app, select(func.count()).select_from(AuthSession)) == RACERS + 1
