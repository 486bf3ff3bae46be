"""Learning which addresses have accounts from forgot-password and resend-verification.

For an unknown, an inactive and a known address both flows answer the same status, body
and headers (bar the request id and Date), log the same security event naming the
address only by its `acct_` digest, and spend the rate limits alike: an unknown address
uses up the per-address and the per-client budgets exactly as a known one. The request
does the same work for every address, which is what keeps the answer time the same; that
is proved here without timing anything: the SQL statements each request executes (seen
on the app's engine) are the same sequence whatever the address. The time ratio itself
is the benchmark's. Only afterwards, in the sender, does the known address get a mail.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import event, update

from quart_auth_api import cli
from quart_auth_api.db import DATABASE
from quart_auth_api.models import User
from tests.helpers.attacks import answer_of, event_text, open_mail_app
from tests.helpers.http import problem, register
from tests.helpers.mailbox import deliver_all, to

KNOWN = "known@example.com"
INACTIVE = "inactive@example.com"
UNKNOWN = "nobody@example.com"
PROBES = (UNKNOWN, INACTIVE, KNOWN)
SENT = "If an account has this address, a mail with a link is on its way."
ACCT = re.compile(r"acct_[0-9a-f]{16}")
USERS = re.compile(r"\busers\b", re.IGNORECASE)
STANDARD = set(vars(logging.makeLogRecord({})))


@dataclass(frozen=True)
class Flow:
    path: str
    event: str
    #: The settings of its per-address and per-client limits.
    narrow: str
    wide: str


FLOWS = {
    "forgot": Flow(
        "/auth/password/forgot",
        "password_reset_requested",
        "rate_limit_forgot",
        "rate_limit_forgot_ip",
    ),
    "verification": Flow(
        "/auth/email/verification",
        "verification_requested",
        "rate_limit_verification",
        "rate_limit_verification_ip",
    ),
}

MakeMailApp = Callable[..., Awaitable[tuple[Quart, Client]]]


@pytest.fixture
async def build_mail_app(
    database_url: str, smtp: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeMailApp]:
    """Apps with a known, an inactive (and no unknown) account, sending through `smtp`
    (the test delivers); what registration mailed is delivered and forgotten."""
    monkeypatch.setattr(cli, "MAIL_POLL", 3600.0)
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> tuple[Quart, Client]:
            app, client = await open_mail_app(stack, database_url, smtp, **overrides)
            for address in (KNOWN, INACTIVE):
                await register(client, email=address)
            async with DATABASE.get(app).sessionmaker() as db:
                await db.execute(update(User).where(User.email == INACTIVE).values(is_active=False))
                await db.commit()
            await deliver_all(app)
            smtp.received.clear()
            return app, client

        yield make


def events_of(exposure: Any, name: str) -> list[logging.LogRecord]:
    return [r for r in exposure.records if getattr(r, "event", None) == name]


def shape(record: logging.LogRecord) -> tuple[str, str, str, tuple[str, ...]]:
    """What one event says bar the digest: logger, level, message and its fields' names."""
    fields = tuple(sorted(set(vars(record)) - STANDARD))
    return record.name, record.levelname, ACCT.sub("acct_*", record.getMessage()), fields


@pytest.mark.parametrize("flow", FLOWS.values(), ids=FLOWS.keys())
async def test_every_address_gets_the_same_answer_and_the_same_event(
    build_mail_app, smtp, exposure, flow
):
    app, client = await build_mail_app()

    answers = [await client.post(flow.path, json={"email": email}) for email in PROBES]

    first = await answer_of(answers[0])
    assert first[:2] == (202, {"message": SENT})
    for response in answers[1:]:
        assert await answer_of(response) == first
    events = events_of(exposure, flow.event)
    assert len(events) == len(PROBES)
    digests = [record.account for record in events]
    assert all(ACCT.fullmatch(digest) for digest in digests), digests
    assert len(set(digests)) == len(PROBES)  # one per address, yet none is the address
    shapes = {shape(record) for record in events}
    assert len(shapes) == 1, shapes
    for record in exposure.records:
        text = event_text(record)
        assert not any(email in text for email in PROBES), text
    # only now, in the sender, does an address turn out to be an account's
    await deliver_all(app)
    assert [len(to(smtp, email)) for email in PROBES] == [0, 0, 1]


@pytest.mark.parametrize("flow", FLOWS.values(), ids=FLOWS.keys())
async def test_the_per_address_limit_counts_unknown_addresses_like_known_ones(
    build_mail_app, clock, flow
):
    """Two a window per address: the third request for any address is refused, with the
    same 429 (the clock stands still, so even Retry-After is the same)."""
    _, client = await build_mail_app(**{flow.narrow: "2/hour", flow.wide: "100/hour"})
    limited = []
    for email in PROBES:
        statuses = []
        for _ in range(3):
            response = await client.post(flow.path, json={"email": email})
            statuses.append(response.status_code)
        assert statuses == [202, 202, 429], email
        await problem(response, 429, "rate_limited")
        limited.append(await answer_of(response))

    assert limited[0] == limited[1] == limited[2]


@pytest.mark.parametrize("flow", FLOWS.values(), ids=FLOWS.keys())
@pytest.mark.parametrize(
    "order", [PROBES, tuple(reversed(PROBES))], ids=["unknown-first", "known-first"]
)
async def test_the_per_client_limit_counts_unknown_addresses_like_known_ones(
    build_mail_app, clock, flow, order
):
    """Three a window per client: whichever addresses spent them, the next request is
    refused, for a known address as for an unknown one."""
    _, client = await build_mail_app(**{flow.narrow: "100/hour", flow.wide: "3/hour"})
    for email in order:
        response = await client.post(flow.path, json={"email": email})
        assert response.status_code == 202, email

    refused = [
        await client.post(flow.path, json={"email": email}) for email in (KNOWN, "new@example.com")
    ]

    for response in refused:
        await problem(response, 429, "rate_limited")
    assert await answer_of(refused[0]) == await answer_of(refused[1])


@contextmanager
def statements_of(app: Quart) -> Iterator[list[tuple[str, bool]]]:
    """Every SQL statement the app's engine executes meanwhile (text, executemany), and
    every commit."""
    seen: list[tuple[str, bool]] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        seen.append((statement, many))

    def commit(conn: Any) -> None:
        seen.append(("COMMIT", False))

    engine = DATABASE.get(app).engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", commit)


@pytest.mark.parametrize("flow", FLOWS.values(), ids=FLOWS.keys())
async def test_every_address_costs_the_same_sql_statements(build_mail_app, flow):
    """A regression guard for the answer time: a lookup of the address, or a write only
    for a known one, would show here as a different sequence. A first request warms up
    whatever is done once per process."""
    app, client = await build_mail_app()
    assert (await client.post(flow.path, json={"email": "warm-up@example.com"})).status_code == 202

    sequences = []
    for email in (*PROBES, "another@example.com"):
        with statements_of(app) as seen:
            response = await client.post(flow.path, json={"email": email})
        assert response.status_code == 202
        sequences.append(list(seen))

    assert sequences[0], "the request executed no SQL at all"
    assert any("outbox_messages" in statement for statement, _ in sequences[0])
    for email, sequence in zip(PROBES[1:], sequences[1:], strict=False):
        assert sequence == sequences[0], email
    assert sequences[-1] == sequences[0]
    # and the app reads no account in the request: the statements touch only the outbox
    assert not any(USERS.search(statement) for statement, _ in sequences[0])
    assert [statement for statement, _ in sequences[0]].count("COMMIT") == 1
