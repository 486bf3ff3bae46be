"""PostgreSQL's token checks that meet go out together (`statements_postgres.Batcher`):
each read gets what it alone would get, read after its request arrived; a refused
value, a server error, a cancelled waiter and the deadline each touch only what they
must."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import (
    Float,
    Integer,
    String,
    bindparam,
    cast,
    column,
    func,
    literal_column,
    select,
    table,
    update,
)
from sqlalchemy.exc import DBAPIError

from quart_auth_api.db import DATABASE, open_database, read_one
from quart_auth_api.models import AuthSession, utcnow
from quart_auth_api.services.accounts import USER_BY_EMAIL
from quart_auth_api.services.sessions import load_live_session
from settings import Settings
from tests.helpers.http import Account, bearer, claims_of, problem, register
from tests.helpers.processes import TEST_DATABASE_URL


def postgresql_only(test):
    """The test on PostgreSQL alone (the reads that go out together are its reader's)."""
    test = pytest.mark.parametrize("backend", ["postgresql"])(test)
    return pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs PostgreSQL")(test)


class RoundTrips:
    """The PostgreSQL reader's round trips, counted (how many reads each carried), and
    optionally held after the database answered, until `release` is set."""

    def __init__(self, app, monkeypatch: pytest.MonkeyPatch) -> None:
        statements = DATABASE.get(app).statements
        self.sizes: list[int] = []
        self.answered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        fetch = statements.fetch  # type: ignore[union-attr]

        async def counted(sql: str, parameters: list):
            together = sql.startswith("SELECT qaa_reads.n")
            self.sizes.append(len(parameters[0]) if together else 1)
            rows = await fetch(sql, parameters)
            self.answered.set()
            await self.release.wait()
            return rows

        monkeypatch.setattr(statements, "fetch", counted)


@dataclass
class OnItsWay:
    """A check of a new account's session on its way: the database has answered it, and
    the answer is held until `trips.release` is set."""

    trips: RoundTrips
    account: Account
    sid: uuid.UUID
    sub: uuid.UUID
    first: asyncio.Task

    def check(self) -> asyncio.Task:
        """One more check of that session, started now (it queues behind the first)."""
        return asyncio.create_task(load_live_session(session_id=self.sid, user_public_id=self.sub))


@contextlib.asynccontextmanager
async def a_check_on_its_way(app, client, monkeypatch) -> AsyncIterator[OnItsWay]:
    account = await register(client)
    claims = claims_of(account.access_token)
    sid, sub = uuid.UUID(claims["sid"]), uuid.UUID(claims["sub"])
    trips = RoundTrips(app, monkeypatch)
    trips.release.clear()
    async with app.app_context():
        first = asyncio.create_task(load_live_session(session_id=sid, user_public_id=sub))
        await trips.answered.wait()
        yield OnItsWay(trips, account, sid, sub, first)


async def revoke(app, sid: uuid.UUID) -> None:
    async with DATABASE.get(app).sessionmaker() as db:
        await db.execute(
            update(AuthSession).where(AuthSession.id == sid).values(revoked_at=utcnow())
        )
        await db.commit()


@postgresql_only
async def test_reads_that_meet_go_out_together_and_each_gets_its_own_answer(
    app, client, monkeypatch
):
    """PostgreSQL: 40 guard checks started at once (live sessions of three users, the
    same one twice, a revoked session, another user's session, an unknown session): the
    first goes out alone, the other 39 while it is on its way wait for it and then go
    out together, in one round trip, and each gets what it alone would get."""
    accounts = [await register(client) for _ in range(4)]
    claims = [claims_of(account.access_token) for account in accounts]
    ids = [(uuid.UUID(c["sid"]), uuid.UUID(c["sub"])) for c in claims]
    await revoke(app, ids[3][0])
    cases = [
        (ids[0], accounts[0].email),
        (ids[1], accounts[1].email),
        (ids[0], accounts[0].email),
        (ids[2], accounts[2].email),
        (ids[3], None),  # revoked
        ((ids[0][0], ids[1][1]), None),  # another user's session
        ((uuid.uuid4(), ids[0][1]), None),  # unknown
        (ids[1], accounts[1].email),
    ] * 5
    trips = RoundTrips(app, monkeypatch)
    async with app.app_context():
        found = await asyncio.gather(
            *(load_live_session(session_id=sid, user_public_id=sub) for (sid, sub), _ in cases)
        )
    assert [live.user.email if live else None for live in found] == [e for _, e in cases]
    assert trips.sizes == [1, len(cases) - 1]  # the first alone, the rest while it was out


@postgresql_only
async def test_a_read_queued_behind_a_round_trip_sees_what_was_committed_before_it(
    app, client, monkeypatch
):
    """PostgreSQL: while one check of a session is on its way (the database has
    answered: live), the session is revoked, and then the same check starts again. It
    waits for the first to come back, and still reads the database itself: it finds
    the revocation (a check never gets an answer read before its request arrived)."""
    async with a_check_on_its_way(app, client, monkeypatch) as held:
        await revoke(app, held.sid)
        second, third = held.check(), held.check()
        await asyncio.sleep(0.05)
        assert not second.done() and held.trips.sizes == [1]  # queued behind the first
        held.trips.release.set()
        found = await asyncio.gather(held.first, second, third)
    assert found[0] is not None and found[0].session_id == held.sid
    assert found[1:] == [None, None]
    assert held.trips.sizes == [1, 2]
    response = await client.get("/auth/me", headers=bearer(held.account.access_token))
    await problem(response, 401, "token_revoked")


@postgresql_only
async def test_a_check_that_stops_waiting_cuts_no_other_short(app, client, monkeypatch):
    """PostgreSQL: of four checks queued behind a round trip, one is cancelled (its
    client gone): it is left out of the next round trip, and the other three, and the
    one on its way, get their answers."""
    async with a_check_on_its_way(app, client, monkeypatch) as held:
        queued = [held.check() for _ in range(4)]
        await asyncio.sleep(0)
        queued[1].cancel()
        held.trips.release.set()
        found = await asyncio.gather(held.first, *queued, return_exceptions=True)
    assert isinstance(found[2], asyncio.CancelledError)
    live = found[:2] + found[3:]
    assert all(getattr(one, "session_id", None) == held.sid for one in live)
    assert held.trips.sizes == [1, 3]


@postgresql_only
async def test_a_value_the_database_refuses_fails_only_its_own_read(app, monkeypatch):
    """PostgreSQL: two reads go out together (behind a third) and the database refuses
    one's value (not an integer): they fail as one, and are each run again alone, so
    only that read fails, with SQLAlchemy's error (the 503 path), and the others get
    their rows."""
    number = select(cast(bindparam("value", type_=String), Integer).label("n"))
    trips = RoundTrips(app, monkeypatch)
    async with app.app_context():
        found = await asyncio.gather(
            *(read_one(number, {"value": value}) for value in ("1", "x", "3")),
            return_exceptions=True,
        )
    assert found[0].n == 1 and found[2].n == 3
    assert isinstance(found[1], DBAPIError) and not found[1].connection_invalidated
    assert trips.sizes == [1, 2, 1, 1]  # "1" alone; "x" and "3" together, then alone


@postgresql_only
async def test_reads_of_a_statement_that_gives_no_parameter_type_go_one_by_one(app, monkeypatch):
    """PostgreSQL: the reads' parameters go out together as typed arrays; a statement
    whose parameter has no type cannot, and its reads, started at once, each go out
    alone and each get their own value."""
    echo = select(bindparam("value").label("v"))
    trips = RoundTrips(app, monkeypatch)
    async with app.app_context():
        found = await asyncio.gather(*(read_one(echo, {"value": v}) for v in ("a", "b", "c")))
    assert [row.v for row in found] == ["a", "b", "c"]
    assert trips.sizes == [1, 1, 1]


@postgresql_only
async def test_an_error_of_the_server_fails_every_read_of_the_trip_at_once(app, monkeypatch):
    """PostgreSQL: an error that is not about one read's value (here a missing table,
    as a schema out of date or a server starting up would be) fails every read that
    went out together, in that one round trip: they are not run again one by one."""
    missing = (
        select(literal_column("id").label("id"))
        .select_from(table("no_such_table"))
        .where(column("id") == bindparam("id", type_=Integer))
    )
    trips = RoundTrips(app, monkeypatch)
    async with app.app_context():
        found = await asyncio.gather(
            *(read_one(missing, {"id": n}) for n in range(3)), return_exceptions=True
        )
    assert all(isinstance(error, DBAPIError) for error in found)
    assert trips.sizes == [1, 2]


@postgresql_only
async def test_reads_queued_behind_a_read_that_stops_waiting_still_go_out(app, client, monkeypatch):
    """PostgreSQL: the read on its way is cancelled (its client gone) while two wait
    behind it: they go out together all the same and get their answers."""
    async with a_check_on_its_way(app, client, monkeypatch) as held:
        queued = [held.check() for _ in range(2)]
        await asyncio.sleep(0)
        held.first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await held.first
        held.trips.release.set()
        found = await asyncio.gather(*queued)
    assert [live.session_id for live in found] == [held.sid, held.sid]
    assert held.trips.sizes == [1, 2]


@postgresql_only
async def test_reads_that_go_out_together_keep_the_deadline(database_url):
    """PostgreSQL: reads queued behind a slow one go out together and take longer than
    DB_CHECK_TIMEOUT (0.3 s here): each answers TimeoutError (the 503) within its
    deadline, the round trip is cut and its connection never returns to the pool, and
    the next read is answered at once."""
    settings = Settings.for_testing(database_url=database_url, db_check_timeout=0.3)
    database = open_database(settings)
    sleep = select(func.pg_sleep(bindparam("seconds", type_=Float)).label("slept"))
    try:
        first = asyncio.create_task(database.statements.one(sleep, {"seconds": 0.05}))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        queued = await asyncio.gather(
            *(database.statements.one(sleep, {"seconds": 5}) for _ in range(2)),
            return_exceptions=True,
        )
        waited = time.monotonic() - started
        await first
        assert [type(error) for error in queued] == [TimeoutError, TimeoutError]
        assert waited < 1.0
        for _ in range(50):  # the cut trip's task ends once its own deadline passes
            if database.engine.pool.checkedout() == 0:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.02)
        assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        started = time.monotonic()
        assert (await database.statements.one(sleep, {"seconds": 0})) is not None
        assert time.monotonic() - started < 0.3
    finally:
        await database.close()


@postgresql_only
async def test_a_long_address_found_together_is_found_as_alone(app, client, monkeypatch):
    """PostgreSQL: the login's read of a user by address, for a 254-character address
    and for that address with one character more, several at once: the longer one finds
    nothing, alone or together (the arrays take the statement's own cast, VARCHAR
    without a length; a VARCHAR(254) cast would cut the longer one to the account's)."""
    domain = ".".join(["b" * 63, "c" * 63, "d" * 57]) + ".com"
    email = f"{'a' * 64}@{domain}"
    assert len(email) == 254
    await register(client, email=email)
    longer = email + "m"
    trips = RoundTrips(app, monkeypatch)
    async with app.app_context():
        found = await asyncio.gather(
            *(read_one(USER_BY_EMAIL, {"email": e}) for e in (email, longer, longer, email))
        )
    assert [row.email if row else None for row in found] == [email, None, None, email]
    assert trips.sizes == [1, 3]
