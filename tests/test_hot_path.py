"""The hot path's own database access: `db.read_one` (the guard's check) and the
one-statement refresh rotation give what the ORM gives, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from datetime import UTC, timedelta

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import make_url

from quart_auth_api.db import DATABASE, SQLITE_BUSY_TIMEOUT_MS, open_database, read_one
from quart_auth_api.models import AuthSession, User, utcnow
from quart_auth_api.services.sessions import LIVE_SESSION, CurrentUser, load_live_session
from settings import Settings
from tests.helpers.http import bearer, claims_of, problem, register


async def live_row(app, sid: str, sub: str):
    async with app.app_context():
        return await read_one(
            LIVE_SESSION,
            {"session_id": uuid.UUID(sid), "user_public_id": uuid.UUID(sub), "now": utcnow()},
        )


async def test_read_one_gives_the_orm_values_with_their_types(app, client):
    account = await register(client)
    claims = claims_of(account.access_token)
    row = await live_row(app, claims["sid"], claims["sub"])
    async with DATABASE.get(app).sessionmaker() as db:
        user = await db.scalar(select(User).where(User.public_id == uuid.UUID(claims["sub"])))
        session = await db.get(AuthSession, uuid.UUID(claims["sid"]))
    assert user is not None and session is not None
    assert row is not None
    assert (row.id, row.public_id, row.email, row.name) == (
        user.id,
        user.public_id,
        user.email,
        user.name,
    )
    assert isinstance(row.public_id, uuid.UUID)
    assert row.created_at == user.created_at and row.created_at.tzinfo is UTC
    assert row.updated_at == user.updated_at and row.updated_at.tzinfo is UTC
    assert (row.generation, row.rotated_at) == (0, None)


async def test_read_one_after_a_rotation_sees_the_new_generation(app, client):
    account = await register(client)
    response = await client.post("/auth/refresh", headers=bearer(account.refresh_token))
    assert response.status_code == 200
    claims = claims_of(account.access_token)
    row = await live_row(app, claims["sid"], claims["sub"])
    assert row is not None and row.generation == 1
    assert row.rotated_at is not None and row.rotated_at.tzinfo is UTC
    assert abs(utcnow() - row.rotated_at) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "change",
    [
        {"revoked_at": "now"},
        {"expires_at": "past"},
        {"other_user": True},
        {"inactive": True},
    ],
    ids=["revoked", "expired", "another-users-session", "inactive-user"],
)
async def test_read_one_finds_nothing_for_a_dead_session(app, client, change):
    account = await register(client)
    other = await register(client)
    claims = claims_of(account.access_token)
    sid, sub = uuid.UUID(claims["sid"]), uuid.UUID(claims["sub"])
    now = utcnow()
    async with DATABASE.get(app).sessionmaker() as db:
        if "revoked_at" in change:
            await db.execute(
                update(AuthSession).where(AuthSession.id == sid).values(revoked_at=now)
            )
        if "expires_at" in change:
            past = now - timedelta(seconds=1)
            await db.execute(
                update(AuthSession).where(AuthSession.id == sid).values(expires_at=past)
            )
        if "inactive" in change:
            await db.execute(update(User).where(User.public_id == sub).values(is_active=False))
        await db.commit()
    if "other_user" in change:
        sub = uuid.UUID(claims_of(other.access_token)["sub"])
    async with app.app_context():
        live = await load_live_session(session_id=sid, user_public_id=sub)
    assert live is None
    if "other_user" not in change:
        response = await client.get("/auth/me", headers=bearer(account.access_token))
        await problem(response, 401, "token_revoked")


async def test_current_user_is_a_read_only_snapshot(app, client):
    account = await register(client)
    claims = claims_of(account.access_token)
    async with app.app_context():
        live = await load_live_session(
            session_id=uuid.UUID(claims["sid"]),
            user_public_id=uuid.UUID(claims["sub"]),
        )
    assert live is not None and isinstance(live.user, CurrentUser)
    with pytest.raises(AttributeError):
        live.user.email = "changed@example.com"  # type: ignore[misc]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_errors_of_the_read_are_sqlalchemys(app, client):
    """On SQLite the guard's read bypasses SQLAlchemy's cursor: its errors still arrive
    as SQLAlchemy's (here "no such table", an OperationalError, like "database is
    locked"), so the answer is the 503 of the ORM path, never a 500."""
    account = await register(client)
    async with DATABASE.get(app).engine.begin() as connection:
        await connection.exec_driver_sql("ALTER TABLE auth_sessions RENAME TO gone")
    try:
        response = await client.get("/auth/me", headers=bearer(account.access_token))
        await problem(response, 503, "service_unavailable")
    finally:
        async with DATABASE.get(app).engine.begin() as connection:
            await connection.exec_driver_sql("ALTER TABLE gone RENAME TO auth_sessions")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_busy_sqlite_read_waits_in_the_thread_and_never_on_the_loop(database_url):
    """The guard's SQLite read runs on the event loop and must never wait there: with
    the database locked (another process in exclusive locking mode, mid-write), the loop's
    read is refused at once and the read waits in aiosqlite's thread instead. The lock is
    released by a task that needs the loop to run three times first, so the read can
    only end after the loop ran while it waited; the loop's connection has a busy timeout
    of 0 (asserted), and the whole read takes less than the 15 s one of the pool's
    connections would wait. The row written under the lock is what the read returns."""
    path = make_url(database_url).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute(
        "INSERT INTO users (id, public_id, email, name, password_hash, is_active, created_at,"
        " updated_at) VALUES (7, ?, 'locked@example.com', 'Ada', 'x', 1, ?, ?)",
        (uuid.uuid4().hex, "2026-01-01 00:00:00.000000", "2026-01-01 00:00:00.000000"),
    )
    database = open_database(Settings.for_testing(database_url=database_url))
    ticks = 0

    async def release_after_three_ticks() -> None:
        nonlocal ticks
        while ticks < 3:
            await asyncio.sleep(0.05)
            ticks += 1
        holder.execute("COMMIT")
        holder.close()

    try:
        release = asyncio.create_task(release_after_three_ticks())
        started = time.monotonic()
        row = await database.statements.one(
            select(User.email).where(User.id == bindparam("id")), {"id": 7}
        )
        waited = time.monotonic() - started
        await release
        reader = database.statements._reader  # type: ignore[union-attr]
        assert reader is not None
        # it never waits for a lock (a busy timeout would hold the loop), and never writes
        assert reader.execute("PRAGMA busy_timeout").fetchone() == (0,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("DELETE FROM users")
    finally:
        await database.close()
    assert row is not None and row.email == "locked@example.com"
    assert ticks == 3
    assert waited < SQLITE_BUSY_TIMEOUT_MS / 1000  # never a busy timeout's wait
    assert database.statements.busy_reads == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_write_cancelled_at_any_moment_leaves_no_transaction_open(database_url):
    """A write in aiosqlite's thread whose request is cancelled (its client gone) at any
    moment, 60 times at 0 to 11 loop ticks after it starts: the pool has every connection
    back, and another connection that will not wait can take SQLite's write lock. (Cut
    off, the isolation level's restore could come before the queued call, which then
    opened a transaction nobody ended, holding the lock for every other writer.)"""
    database = open_database(Settings.for_testing(database_url=database_url))
    bump = (
        update(AuthSession)
        .where(AuthSession.id == bindparam("sid"))
        .values(generation=AuthSession.generation + 1)
    )
    path = make_url(database_url).database
    assert path is not None
    try:  # a first write opens the pool's connection, as in a worker that serves
        assert await database.statements.rowcount(bump, {"sid": uuid.uuid4()}) == 0
        for attempt in range(60):
            task = asyncio.create_task(database.statements.rowcount(bump, {"sid": uuid.uuid4()}))
            for _ in range(attempt % 12):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)  # whatever the call left queued in the thread runs
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # "database is locked" if one was left
                other.execute("ROLLBACK")
            finally:
                other.close()
    finally:
        await database.close()
