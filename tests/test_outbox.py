"""The outbox and its sender, against a real SMTP server (aiosmtpd): mail goes out with
its transaction or not at all, is never sent twice, and while the SMTP server is down
nothing is lost: it all arrives, once each, after it comes back. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from quart_auth_api import cli, create_app
from quart_auth_api.db import DATABASE
from quart_auth_api.mail import ConsoleSender, MailError, Message, SmtpSender, render
from quart_auth_api.models import OutboxMessage, utcnow
from quart_auth_api.services import outbox
from quart_auth_api.services.outbox import claim_due, deliver_due, enqueue
from settings import ConfigError, Settings
from tests.helpers.processes import PROJECT_ROOT, service_env
from tests.helpers.smtp import SmtpServer

MAX_ATTEMPTS = 3


def smtp_sender(server: SmtpServer) -> SmtpSender:
    return SmtpSender(
        Settings.for_testing(
            mail_backend="smtp",
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_security="none",
            smtp_timeout=2,
        )
    )


def message(n: int = 0) -> Message:
    return render(
        "notice",
        to=f"user{n}@example.com",
        subject=f"Reset your password ({n})",
        what="Someone asked to reset the password of this account.",
        link=f"http://localhost:5000/reset-password#token=t{n}",
        expires="in 1 hour",
    )


async def add(app, *messages: Message, commit: bool = True) -> None:
    async with DATABASE.get(app).sessionmaker() as db:
        for item in messages:
            enqueue(db, message=item, user_id=None)
        if commit:
            await db.commit()
        else:
            await db.rollback()


async def deliver(app, sender) -> tuple[int, int]:
    return await deliver_due(DATABASE.get(app).sessionmaker, sender, max_attempts=MAX_ATTEMPTS)


async def rows(app) -> list[OutboxMessage]:
    async with DATABASE.get(app).sessionmaker() as db:
        return list((await db.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


def later(monkeypatch, by: timedelta) -> None:
    """Let `by` pass for the outbox (its one clock)."""
    now = utcnow() + by
    monkeypatch.setattr(outbox, "utcnow", lambda: now)


async def test_a_committed_message_arrives_once_with_both_parts(app, smtp):
    await add(app, message())

    assert await deliver(app, smtp_sender(smtp)) == (1, 0)
    assert await deliver(app, smtp_sender(smtp)) == (0, 0)
    [received] = smtp.received
    assert received["To"] == "user0@example.com"
    assert received["From"] == "Quart Auth API <no-reply@localhost>"
    assert received["Subject"] == "Reset your password (0)"
    text = received.get_body(("plain",)).get_content()
    html = received.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Quart Auth API" in part and "If this wasn't you" in part
        assert "http://localhost:5000/reset-password#token=t0" in part
        assert "expires in 1 hour" in part
    [row] = await rows(app)
    assert row.sent_at is not None and row.attempts == 1
    assert row.text_body == row.html_body == ""  # the link is not kept once sent


async def test_a_message_whose_transaction_rolled_back_is_never_sent(app, smtp):
    await add(app, message(), commit=False)

    assert await deliver(app, smtp_sender(smtp)) == (0, 0)
    assert smtp.received == [] and await rows(app) == []


async def test_an_smtp_outage_loses_nothing_and_sends_nothing_twice(app, smtp, monkeypatch):
    """Stop the server, queue mail, deliver (it fails and waits), start the server, let
    the backoff pass: every message arrives exactly once."""
    smtp.stop()
    await add(app, *(message(n) for n in range(5)))

    assert await deliver(app, smtp_sender(smtp)) == (0, 5)
    assert await deliver(app, smtp_sender(smtp)) == (0, 0)  # not due before the backoff
    assert all(row.next_attempt_at > utcnow() for row in await rows(app))
    smtp.start()
    later(monkeypatch, outbox.backoff(1) + timedelta(seconds=1))

    assert await deliver(app, smtp_sender(smtp)) == (5, 0)
    assert await deliver(app, smtp_sender(smtp)) == (0, 0)
    assert sorted(m["To"] for m in smtp.received) == [f"user{n}@example.com" for n in range(5)]


async def test_a_message_is_given_up_after_the_last_attempt(app, smtp, monkeypatch):
    smtp.stop()
    await add(app, message())
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await deliver(app, smtp_sender(smtp)) == (0, 1)
        later(monkeypatch, timedelta(hours=attempt + 1))
    assert await deliver(app, smtp_sender(smtp)) == (0, 0)
    [row] = await rows(app)
    assert row.failed_at is not None and row.attempts == MAX_ATTEMPTS
    assert row.last_error and row.text_body == ""


async def test_two_senders_never_claim_one_message(app):
    await add(app, *(message(n) for n in range(12)))
    sessions = DATABASE.get(app).sessionmaker

    async def sender() -> list[int]:
        taken: list[int] = []
        while True:  # claim until nothing is left
            async with sessions() as db:
                batch = [item.id for item in await claim_due(db, limit=8)]
            if not batch:
                return taken
            taken += batch

    first, second = await asyncio.gather(sender(), sender())

    assert not set(first) & set(second)
    assert len(first) + len(second) == 12


async def test_a_claim_whose_sender_died_is_due_again_after_its_lease(app, monkeypatch):
    await add(app, message())
    async with DATABASE.get(app).sessionmaker() as db:
        assert len(await claim_due(db)) == 1  # claimed, never marked: the worker died
        assert await claim_due(db) == []
    later(monkeypatch, outbox.LEASE + timedelta(seconds=1))
    async with DATABASE.get(app).sessionmaker() as db:
        [again] = await claim_due(db)
    assert again.attempts == 2


async def test_the_console_sender_prints_the_whole_message(capsys):
    await ConsoleSender("Quart Auth API <no-reply@localhost>").send(message())
    printed = capsys.readouterr().out
    assert "To: user0@example.com" in printed
    assert "reset-password#token=t0" in printed


def test_the_html_part_escapes_what_it_is_given():
    rendered = render(
        "notice", to="a@example.com", subject="s", what="<script>x</script>", link="", expires=""
    )
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert "<script>x</script>" in rendered.text


async def test_each_worker_sends_what_is_due_in_the_background(database_url, smtp, monkeypatch):
    monkeypatch.setattr(cli, "MAIL_POLL", 0.05)
    app = create_app(
        Settings.for_testing(
            database_url=database_url,
            mail_backend="smtp",
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_security="none",
        )
    )
    async with app.test_app():
        await add(app, message(1), message(2))
        for _ in range(200):  # at most ~10 s: a bound, not a measurement
            if len(smtp.received) == 2:
                break
            await asyncio.sleep(0.05)
    assert sorted(m["To"] for m in smtp.received) == ["user1@example.com", "user2@example.com"]


async def test_mail_send_pending_delivers_from_the_command_line(app, database_url, smtp):
    await add(app, message(1), message(2))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "quart", "--app", "quart_auth_api", "mail", "send-pending"],
        cwd=PROJECT_ROOT,
        env=service_env(
            DATABASE_URL=database_url,
            QUART_ENV="testing",
            MAIL_BACKEND="smtp",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(smtp.port),
            SMTP_SECURITY="none",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mail send-pending: 2 sent, 0 failed" in result.stdout
    assert len(smtp.received) == 2


async def test_a_line_break_in_a_header_is_a_failed_delivery_not_a_dead_sender(app, smtp):
    forged = Message("victim@example.com\r\nBcc: all@example.com", "s", "text", "<p>html</p>")
    await add(app, forged, message(1))

    assert await deliver(app, smtp_sender(smtp)) == (1, 1)
    assert [m["To"] for m in smtp.received] == ["user1@example.com"]


async def test_a_claim_takes_no_more_than_its_limit_whatever_the_plan(app, backend):
    """Inside `UPDATE … WHERE id IN (SELECT … LIMIT)` PostgreSQL may rerun the subquery
    per row when its statistics say the table is all sent mail: the LIMIT then held
    nothing (300 claimed for 20). Many sent rows, fresh statistics, then a burst."""
    sessions = DATABASE.get(app).sessionmaker
    now = utcnow()
    async with sessions() as db:
        for n in range(2000):
            db.add(
                OutboxMessage(
                    to_address="a@example.com",
                    subject=f"old {n}",
                    text_body="",
                    html_body="",
                    next_attempt_at=now,
                    sent_at=now,
                )
            )
        await db.commit()
        if backend == "postgresql":
            await db.execute(text("ANALYZE outbox_messages"))
            await db.commit()
    await add(app, *(message(n) for n in range(60)))
    async with sessions() as db:
        assert len(await claim_due(db, limit=5)) == 5


async def test_a_sender_whose_lease_ran_out_marks_nothing(app, monkeypatch):
    """Its claim was taken over: its late mark must not end the new holder's claim."""
    await add(app, message())
    sessions = DATABASE.get(app).sessionmaker
    async with sessions() as db:
        [stale] = await claim_due(db)
    later(monkeypatch, outbox.LEASE + timedelta(seconds=1))
    async with sessions() as db:
        [current] = await claim_due(db)
        await outbox.mark_sent(db, claim=stale)
        await outbox.mark_failed(db, claim=stale, error=MailError("late"), max_attempts=1)
    [row] = await rows(app)
    assert row.sent_at is None and row.failed_at is None
    assert row.claimed_until == current.claimed_until


@pytest.mark.parametrize(
    "to",
    ["victim@example.com, attacker@example.com", "no address", ""],
    ids=["two", "none", "empty"],
)
async def test_a_message_that_can_never_be_sent_is_given_up_at_once(app, smtp, to):
    await add(app, Message(to, "s", "text", "<p>html</p>"))

    assert await deliver(app, smtp_sender(smtp)) == (0, 1)
    [row] = await rows(app)
    assert row.failed_at is not None and row.attempts == 1 and row.text_body == ""
    assert smtp.received == []


async def test_a_stopping_sender_starts_no_send(app, smtp):
    await add(app, message(1), message(2))
    stop = asyncio.Event()
    stop.set()

    sent = await deliver_due(
        DATABASE.get(app).sessionmaker, smtp_sender(smtp), max_attempts=3, stop=stop
    )

    assert sent == (0, 0) and smtp.received == []
    assert all(row.sent_at is None for row in await rows(app))


def test_mail_from_must_be_an_address():
    with pytest.raises(ConfigError, match="^config error: MAIL_FROM: expected an address"):
        Settings.load(_env_file=None, mail_from="bad from")
