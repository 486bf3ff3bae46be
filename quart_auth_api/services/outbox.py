"""The outbox: mail written in the transaction that needs it, delivered later.

`enqueue` adds a rendered notice to the caller's transaction (it commits with the change
it tells of, or not at all); `enqueue_link` adds a mail that will carry a one-time link:
it is composed by the sender (`compose`, from `services/accounts.py`), which mints the
link's token then, so that no usable link ever rests in the outbox, and a mail that
waited out an SMTP outage arrives with a link of full lifetime.

`claim_due` takes due messages with one conditional UPDATE that sets a lease
(`claimed_until`): two senders never hold one message at once, on PostgreSQL `FOR UPDATE
SKIP LOCKED` lets them take different ones, and a lease that ran out (a worker that
died) makes the message due again. `deliver_due` sends what it claimed outside any
transaction and marks each message sent (emptying its bodies) or failed, to be tried
again after a backoff, until MAIL_MAX_ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..audit import audit
from ..db import delete_batch
from ..mail import MailError, Message, Sender
from ..models import OutboxMessage, utcnow

log = logging.getLogger("quart_auth_api.mail")

#: A claimed message is due again this long after its claim (its sender died).
LEASE = timedelta(minutes=5)
#: A message is sent only while this much of its lease is left (a send is a few SMTP
#: commands of up to SMTP_TIMEOUT each); the rest of the batch waits for a new claim.
SEND_MARGIN = timedelta(minutes=2)
#: The wait after the first failed attempt; it doubles with each one, up to BACKOFF_MAX.
BACKOFF = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
BATCH = 5
#: The kind of a mail rendered when it was written.
NOTICE = "notice"


@dataclass(frozen=True)
class Claimed:
    """A claimed message; `claimed_until` is also the claim's fence: a mark applies only
    while the row still carries it (a sender whose lease ran out marks nothing)."""

    id: int
    attempts: int
    claimed_until: datetime
    message: Message
    kind: str = NOTICE
    user_id: int | None = None


#: Composes a link mail when it is sent: its message, or None when there is nobody to
#: send it to any more (no active account, an address already proved).
Compose = Callable[[AsyncSession, Claimed], Awaitable[Message | None]]


def enqueue(db: AsyncSession, *, message: Message, user_id: int | None) -> None:
    """Add `message` to the caller's transaction (it commits with it)."""
    db.add(
        OutboxMessage(
            kind=NOTICE,
            user_id=user_id,
            to_address=message.to,
            subject=message.subject,
            text_body=message.text,
            html_body=message.html,
            attempts=0,
            next_attempt_at=utcnow(),
        )
    )


def enqueue_link(db: AsyncSession, *, kind: str, to: str, user_id: int | None) -> None:
    """Add a mail of link `kind` to `to` to the caller's transaction; its body and token
    are made when it is sent (`Compose`)."""
    db.add(
        OutboxMessage(
            kind=kind,
            user_id=user_id,
            to_address=to,
            subject="",
            text_body="",
            html_body="",
            attempts=0,
            next_attempt_at=utcnow(),
        )
    )


def _due(now: object) -> ColumnElement[bool]:
    return and_(
        OutboxMessage.sent_at.is_(None),
        OutboxMessage.failed_at.is_(None),
        OutboxMessage.next_attempt_at <= now,
        or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
    )


async def claim_due(db: AsyncSession, *, limit: int = BATCH) -> list[Claimed]:
    """Claim up to `limit` due messages for this sender (committed at once).

    The ids are read (and, on PostgreSQL, locked) first and then claimed: inside
    `UPDATE … WHERE id IN (SELECT … LIMIT …)` PostgreSQL may run the subquery once per
    row, and its LIMIT then limits nothing."""
    now = utcnow()
    ids = list(
        await db.scalars(
            select(OutboxMessage.id)
            .where(_due(now))
            .order_by(OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        await db.commit()
        return []
    lease = now + LEASE
    result = await db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), _due(now))  # checked again
        .values(claimed_until=lease, attempts=OutboxMessage.attempts + 1)
        .returning(
            OutboxMessage.id,
            OutboxMessage.attempts,
            OutboxMessage.kind,
            OutboxMessage.user_id,
            OutboxMessage.to_address,
            OutboxMessage.subject,
            OutboxMessage.text_body,
            OutboxMessage.html_body,
        )
        .execution_options(synchronize_session=False)
    )
    rows = result.all()
    await db.commit()
    return [
        Claimed(
            row.id,
            row.attempts,
            lease,
            Message(row.to_address, row.subject, row.text_body, row.html_body),
            row.kind,
            row.user_id,
        )
        for row in rows
    ]


def _holding(claim: Claimed) -> ColumnElement[bool]:
    return and_(
        OutboxMessage.id == claim.id,
        OutboxMessage.claimed_until == claim.claimed_until,
        OutboxMessage.sent_at.is_(None),
    )


async def mark_sent(db: AsyncSession, *, claim: Claimed, skipped: bool = False) -> None:
    """Sent (or, `skipped`, ended unsent: nobody to send it to): kept for the purge,
    without the bodies."""
    note = {"last_error": "skipped: nobody to send it to"} if skipped else {}
    await db.execute(
        update(OutboxMessage)
        .where(_holding(claim))
        .values(sent_at=utcnow(), claimed_until=None, text_body="", html_body="", **note)
        .execution_options(synchronize_session=False)
    )
    await db.commit()


async def mark_failed(
    db: AsyncSession, *, claim: Claimed, error: MailError, max_attempts: int
) -> bool:
    """A failed attempt: due again after the backoff, or given up (True) at the last one,
    or at once when the message can never be sent."""
    now = utcnow()
    attempts = claim.attempts
    given_up = error.permanent or attempts >= max_attempts
    values: dict[str, object] = {"claimed_until": None, "last_error": str(error)[:100]}
    if given_up:
        values |= {"failed_at": now, "text_body": "", "html_body": ""}
    else:
        values["next_attempt_at"] = now + backoff(attempts)
    await db.execute(
        update(OutboxMessage)
        .where(_holding(claim))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    return given_up


def backoff(attempts: int) -> timedelta:
    """30 s after the first failure, doubling, at most an hour."""
    wait: timedelta = BACKOFF * 2 ** max(0, attempts - 1)
    return min(wait, BACKOFF_MAX)


async def deliver_due(
    sessions: async_sessionmaker[AsyncSession],
    sender: Sender,
    *,
    max_attempts: int,
    compose: Compose | None = None,
    stop: asyncio.Event | None = None,
) -> tuple[int, int]:
    """Claim what is due and send it: the number sent, and the number that failed.

    A link mail is composed first (`compose`: its token is minted then; a retry mints a
    new one, which voids the old). A message is sent only while enough of its lease is
    left, and never once `stop` is set (shutting down): what is left is claimed again
    later, so a send is never cut between the SMTP server's answer and its mark."""
    async with sessions() as db:
        claimed = await claim_due(db)
    sent = failed = 0
    for claim in claimed:
        if (stop is not None and stop.is_set()) or utcnow() + SEND_MARGIN > claim.claimed_until:
            break
        message = await _message_of(sessions, claim, compose)
        if message is None:
            async with sessions() as db:
                await mark_sent(db, claim=claim, skipped=True)
            continue
        try:
            await sender.send(message)
        except MailError as error:
            failed += 1
            await _failed(sessions, claim, error, max_attempts)
            continue
        async with sessions() as db:
            await mark_sent(db, claim=claim)
        sent += 1
    return sent, failed


async def _message_of(
    sessions: async_sessionmaker[AsyncSession], claim: Claimed, compose: Compose | None
) -> Message | None:
    if claim.kind == NOTICE:
        return claim.message
    if compose is None:
        raise RuntimeError(f"a {claim.kind} mail needs a composer")
    async with sessions() as db:
        return await compose(db, claim)


async def _failed(
    sessions: async_sessionmaker[AsyncSession],
    claim: Claimed,
    error: MailError,
    max_attempts: int,
) -> None:
    async with sessions() as db:
        given_up = await mark_failed(db, claim=claim, error=error, max_attempts=max_attempts)
    log.warning(
        "mail %d: attempt %d failed (%s)%s",
        claim.id,
        claim.attempts,
        error,
        ", given up" if given_up else "",
    )
    if given_up:
        audit("mail_failed", mail=claim.id, kind=claim.kind, attempts=claim.attempts)


async def purge_outbox(db: AsyncSession, *, older_than: datetime, batch: int) -> int:
    """Delete one batch of messages sent or given up before `older_than`."""
    done = or_(OutboxMessage.sent_at < older_than, OutboxMessage.failed_at < older_than)
    return await delete_batch(db, OutboxMessage.id, done, batch=batch)
