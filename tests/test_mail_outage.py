"""An SMTP outage delays mail and fails nothing: with the SMTP server stopped, every
request that sends mail still answers at once; after it comes back, every message
arrives, exactly once, and its link works. Through the API, on SQLite and PostgreSQL,
with a real SMTP server (aiosmtpd) stopped and started again on its port."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlalchemy import select

from quart_auth_api.db import DATABASE
from quart_auth_api.models import OutboxMessage, utcnow
from quart_auth_api.services import outbox
from tests.helpers.http import PASSWORD, credentials
from tests.helpers.mailbox import deliver_all, link_token, to

USERS = 4


def later(monkeypatch, by: timedelta) -> None:
    """Let `by` pass for the outbox's backoff (its one clock)."""
    now = utcnow() + by
    monkeypatch.setattr(outbox, "utcnow", lambda: now)


async def pending(app) -> list[OutboxMessage]:
    async with DATABASE.get(app).sessionmaker() as db:
        query = select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
        return list((await db.scalars(query)).all())


async def test_requests_answer_while_smtp_is_down_and_every_mail_arrives_once_after(
    mail_app, mail_client, smtp, monkeypatch
):
    emails = [f"user{n}@example.com" for n in range(USERS)]
    smtp.stop()

    answers = []
    for email in emails:
        body = {**credentials(email), "name": "Outage"}
        answers.append((await mail_client.post("/auth/register", json=body)).status_code)
        forgot = {"email": email}
        answers.append((await mail_client.post("/auth/password/forgot", json=forgot)).status_code)
    assert answers == [201, 202] * USERS  # nothing waited on the SMTP server, nothing failed

    assert await deliver_all(mail_app) == (0, 2 * USERS)  # every attempt failed
    assert smtp.received == []
    assert len(await pending(mail_app)) == 2 * USERS  # all still in the outbox

    smtp.start()  # same port
    assert await deliver_all(mail_app) == (0, 0)  # the backoff holds them back for now
    later(monkeypatch, timedelta(seconds=31))
    assert await deliver_all(mail_app) == (2 * USERS, 0)
    assert await deliver_all(mail_app) == (0, 0)

    arrived = Counter((message["To"], message["Subject"]) for message in smtp.received)
    assert len(smtp.received) == 2 * USERS
    assert set(arrived.values()) == {1}  # no duplicates
    assert {address for address, _ in arrived} == set(emails)
    assert await pending(mail_app) == []

    # the links minted when the mails were finally composed work
    [reset] = [m for m in to(smtp, emails[0]) if m["Subject"] == "Reset your password"]
    new = {"token": link_token(reset), "password": "a brand new passphrase"}
    assert (await mail_client.post("/auth/password/reset", json=new)).status_code == 200
    login = {"email": emails[0], "password": "a brand new passphrase"}
    assert (await mail_client.post("/auth/login", json=login)).status_code == 200
    old = {"email": emails[0], "password": PASSWORD}
    assert (await mail_client.post("/auth/login", json=old)).status_code == 401
