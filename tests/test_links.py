"""One-time link tokens (services/links.py): digest-only, purpose-bound, single use under
races, voided by a newer one, expired on time. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from quart_auth_api.db import DATABASE
from quart_auth_api.models import AccountToken, User, utcnow
from quart_auth_api.services import links
from quart_auth_api.services.links import ConsumedLink, consume_link, issue_link
from tests.helpers.http import register

HOUR = timedelta(hours=1)
#: Parallel uses of one token in the race test.
RACERS = 8


@pytest.fixture
async def user_id(app, client) -> int:
    account = await register(client)
    async with DATABASE.get(app).sessionmaker() as db:
        found = await db.scalar(select(User.id).where(User.email == account.email))
    assert found is not None
    return found


async def issue(app, user_id: int, purpose="password_reset", **options) -> str:
    async with DATABASE.get(app).sessionmaker() as db:
        raw = await issue_link(db, user_id=user_id, purpose=purpose, lifetime=HOUR, **options)
        await db.commit()
    return raw


async def consume(app, raw: str, purpose="password_reset") -> ConsumedLink | None:
    async with DATABASE.get(app).sessionmaker() as db:
        used = await consume_link(db, raw=raw, purpose=purpose)
        await db.commit()
    return used


async def test_a_token_opens_once(app, user_id):
    raw = await issue(app, user_id)

    assert await consume(app, raw) == ConsumedLink(user_id, None)
    assert await consume(app, raw) is None


async def test_only_the_digest_is_stored(app, user_id):
    raw = await issue(app, user_id, "email_change", target_email="new@example.com")
    async with DATABASE.get(app).sessionmaker() as db:
        row = await db.scalar(select(AccountToken))
    assert row is not None
    assert len(raw) == 43  # 32 random bytes, URL-safe base64
    assert row.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {row.digest, row.purpose, row.target_email}
    assert await consume(app, raw, "email_change") == ConsumedLink(user_id, "new@example.com")


@pytest.mark.parametrize("other", ["email_verify", "email_change"])
async def test_a_token_is_bound_to_its_purpose(app, user_id, other):
    raw = await issue(app, user_id, "password_reset")

    assert await consume(app, raw, other) is None
    assert await consume(app, raw, "password_reset") is not None  # not spent by the miss


async def test_unknown_and_tampered_tokens_open_nothing(app, user_id):
    raw = await issue(app, user_id)

    assert await consume(app, "x" * 43) is None
    assert await consume(app, raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert await consume(app, raw) is not None


async def test_a_token_expires(app, user_id, monkeypatch):
    raw = await issue(app, user_id)
    later = utcnow() + HOUR + timedelta(seconds=1)
    monkeypatch.setattr(links, "utcnow", lambda: later)

    assert await consume(app, raw) is None


async def test_a_new_token_voids_the_older_ones_of_its_purpose_only(app, user_id):
    first = await issue(app, user_id, "password_reset")
    verify = await issue(app, user_id, "email_verify")
    second = await issue(app, user_id, "password_reset")

    assert await consume(app, first) is None
    assert await consume(app, second) is not None
    assert await consume(app, verify, "email_verify") is not None


async def test_of_parallel_uses_of_one_token_exactly_one_wins(app, user_id):
    raw = await issue(app, user_id)
    start = asyncio.Event()

    async def racer() -> ConsumedLink | None:
        async with DATABASE.get(app).sessionmaker() as db:
            await start.wait()
            used = await consume_link(db, raw=raw, purpose="password_reset")
            await db.commit()
        return used

    racers = [asyncio.create_task(racer()) for _ in range(RACERS)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*racers)

    assert [result for result in results if result is not None] == [ConsumedLink(user_id, None)]


async def test_deleting_the_user_deletes_its_tokens(app, user_id):
    await issue(app, user_id)
    async with DATABASE.get(app).sessionmaker() as db:
        await db.execute(delete(User).where(User.id == user_id))
        await db.commit()
        assert await db.scalar(select(AccountToken)) is None


async def test_of_tokens_issued_at_once_only_one_stays_valid(app, user_id):
    """Two requests for a reset at the same moment: the later voids the earlier."""
    start = asyncio.Event()

    async def issuer() -> str:
        async with DATABASE.get(app).sessionmaker() as db:
            await start.wait()
            raw = await issue_link(db, user_id=user_id, purpose="password_reset", lifetime=HOUR)
            await db.commit()
        return raw

    issuers = [asyncio.create_task(issuer()) for _ in range(4)]
    await asyncio.sleep(0)
    start.set()
    tokens = await asyncio.gather(*issuers)

    valid = [raw for raw in tokens if await consume(app, raw) is not None]
    assert len(valid) == 1
