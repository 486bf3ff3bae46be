"""Rows that do not pile up: ended sessions, sent mail and spent link tokens are purged in
batches once older than SESSION_RETENTION."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from quart_auth_api import create_app
from quart_auth_api.cli import purge_all
from quart_auth_api.db import DATABASE
from quart_auth_api.models import AccountToken, AuthSession, OutboxMessage, User, utcnow
from settings import Settings
from tests.helpers.http import claims_of, register
from tests.helpers.processes import PROJECT_ROOT, service_env

OLD = timedelta(days=30)


async def seed(app, client, *, live: int, expired: int, revoked_old: int, revoked_new: int):
    """Sessions in each state; returns the sids that must survive."""
    sids = []
    for _ in range(live + expired + revoked_old + revoked_new):
        account = await register(client)
        sids.append(claims_of(account.access_token)["sid"])
    now = utcnow()
    states = (
        [None] * live
        + [{"expires_at": now - OLD}] * expired
        + [{"revoked_at": now - OLD, "revoked_reason": "logout"}] * revoked_old
        + [{"revoked_at": now - timedelta(hours=1), "revoked_reason": "logout"}] * revoked_new
    )
    async with DATABASE.get(app).sessionmaker() as db:
        for sid, values in zip(sids, states, strict=True):
            if values:
                await db.execute(
                    update(AuthSession).where(AuthSession.id == uuid.UUID(sid)).values(**values)
                )
        await db.commit()
    return set(sids[:live]) | set(sids[live + expired + revoked_old :])


async def remaining(app) -> set[str]:
    async with DATABASE.get(app).sessionmaker() as db:
        return {str(sid) for sid in await db.scalars(select(AuthSession.id))}


async def test_purge_deletes_only_old_rows_in_batches(app, client):
    survivors = await seed(app, client, live=3, expired=4, revoked_old=3, revoked_new=2)
    deleted = await purge_all(DATABASE.get(app).sessionmaker, retention=timedelta(days=7), batch=2)
    assert deleted == 7
    assert await remaining(app) == survivors


async def test_live_sessions_keep_working_after_a_purge(app, client):
    account = await register(client)
    await seed(app, client, live=0, expired=3, revoked_old=0, revoked_new=0)
    await purge_all(DATABASE.get(app).sessionmaker, retention=timedelta(days=7), batch=10)
    assert (await client.get("/auth/me", headers=account.auth)).status_code == 200


async def test_purges_running_at_once_delete_each_row_once(app, client):
    survivors = await seed(app, client, live=2, expired=6, revoked_old=6, revoked_new=0)
    totals = await asyncio.gather(
        *(
            purge_all(DATABASE.get(app).sessionmaker, retention=timedelta(days=7), batch=3)
            for _ in range(3)
        )
    )
    assert sum(totals) == 12
    assert await remaining(app) == survivors


async def test_background_purge_runs_in_the_worker(database_url):
    app = create_app(Settings.for_testing(database_url=database_url, session_purge_interval=0.05))
    async with app.test_app():
        client = app.test_client()
        survivors = await seed(app, client, live=1, expired=2, revoked_old=0, revoked_new=0)
        for _ in range(100):  # bounded: at most ~5 s
            if await remaining(app) == survivors:
                break
            await asyncio.sleep(0.05)
        assert await remaining(app) == survivors


async def test_cli_command_purges_and_reports(app, client, database_url):
    await seed(app, client, live=1, expired=2, revoked_old=1, revoked_new=0)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "quart", "--app", "quart_auth_api", "purge-sessions"],
        cwd=PROJECT_ROOT,
        env=service_env(DATABASE_URL=database_url, QUART_ENV="testing"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "purge-sessions: 3 rows deleted" in result.stdout
    async with DATABASE.get(app).sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(AuthSession)) == 1


async def test_sent_mail_and_spent_link_tokens_are_purged_with_the_sessions(app, client):
    """Old sent or given-up mail and old used or expired tokens go; what is pending, or
    recent, stays (a token still valid, a message still to send)."""
    account = await register(client)
    now = utcnow()
    async with DATABASE.get(app).sessionmaker() as db:
        user_id = await db.scalar(select(User.id).where(User.email == account.email))
        mails = {
            "sent long ago": {"sent_at": now - OLD},
            "given up long ago": {"failed_at": now - OLD},
            "sent an hour ago": {"sent_at": now - timedelta(hours=1)},
            "pending": {},
        }
        for subject, values in mails.items():
            db.add(
                OutboxMessage(
                    to_address="a@example.com",
                    subject=subject,
                    text_body="",
                    html_body="",
                    next_attempt_at=now,
                    **values,
                )
            )
        tokens = {
            "used long ago": {"used_at": now - OLD, "expires_at": now - OLD},
            "expired long ago": {"expires_at": now - OLD},
            "valid": {"expires_at": now + timedelta(hours=1)},
        }
        for digest, values in tokens.items():
            db.add(AccountToken(digest=digest, purpose="password_reset", user_id=user_id, **values))
        await db.commit()

    deleted = await purge_all(DATABASE.get(app).sessionmaker, retention=timedelta(days=7), batch=1)

    assert deleted == 4
    async with DATABASE.get(app).sessionmaker() as db:
        assert set(await db.scalars(select(OutboxMessage.subject))) == {
            "sent an hour ago",
            "pending",
        }
        assert set(await db.scalars(select(AccountToken.digest))) == {"valid"}
