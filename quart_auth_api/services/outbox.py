"""The outbox: mail written in the transaction that needs it, delivered later.

`enqueue` adds a message to the caller's transaction (it commits with the token the mail
carries, or not at all). `claim_due` takes due messages with one conditional UPDATE that
sets a lease (`claimed_until`): two senders never hold one message at once, on
PostgreSQL `FOR UPDATE SKIP LOCKED` lets them take different ones, and a lease that
ran out (a worker that died) makes the message due again. `deliver_due` sends what it
claimed outside any transaction and marks each message sent (emptying its bodies) or
failed, to be tried again after a backoff, until MAIL_MAX_ATTEMPTS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db import delete_batch
from ..mail import MailError, Message, Sender
from ..models import OutboxMessage, utcnow

log = logging.getLogger("quart_auth_api.mail")

#: A claimed message is due again this long after its claim (its sender died).
LEASE = timedelta(minutes=2)
#: The wait after the first failed attempt; it doubles with each one, up to BACKOFF_MAX.
BACKOFF = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
BATCH = 20


@dataclass(frozen=True)
class Claimed:
    id: int
    attempts: int
    message: Message


def enqueue(db: AsyncSession, *, message: Message, user_id: int | None) -> None:
    """Add `message` to the caller's transaction (it commits with it)."""
    db.add(
        OutboxMessage(
            user_id=user_id,
            to_address=message.to,
            subject=message.subject,
            text_body=message.text,
            html_body=message.html,
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
    """Claim up to `limit` due messages for this sender (committed at once)."""
    now = utcnow()
    due = (
        select(OutboxMessage.id)
        .where(_due(now))
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(due.scalar_subquery()), _due(now))  # checked again
        .values(claimed_until=now + LEASE, attempts=OutboxMessage.attempts + 1)
        .returning(
            OutboxMessage.id,
            OutboxMessage.attempts,
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
            row.id, row.attempts, Message(row.to_address, row.subject, row.text_body, row.html_body)
        )
        for row in rows
    ]


async def mark_sent(db: AsyncSession, *, message_id: int) -> None:
    """Sent: kept for the purge, without the bodies (they may hold a link)."""
    await db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(sent_at=utcnow(), claimed_until=None, text_body="", html_body="")
        .execution_options(synchronize_session=False)
    )
    await db.commit()


async def mark_failed(
    db: AsyncSession, *, message_id: int, attempts: int, error: str, max_attempts: int
) -> bool:
    """A failed attempt: due again after the backoff, or given up (True) at the last one."""
    now = utcnow()
    given_up = attempts >= max_attempts
    values: dict[str, object] = {"claimed_until": None, "last_error": error[:100]}
    if given_up:
        values |= {"failed_at": now, "text_body": "", "html_body": ""}
    else:
        values["next_attempt_at"] = now + backoff(attempts)
    await db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
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
    sessions: async_sessionmaker[AsyncSession], sender: Sender, *, max_attempts: int
) -> tuple[int, int]:
    """Claim what is due and send it: the number sent, and the number that failed."""
    async with sessions() as db:
        claimed = await claim_due(db)
    sent = failed = 0
    for item in claimed:
        try:
            await sender.send(item.message)
        except MailError as error:
            failed += 1
            async with sessions() as db:
                given_up = await mark_failed(
                    db,
                    message_id=item.id,
                    attempts=item.attempts,
                    error=str(error),
                    max_attempts=max_attempts,
                )
            log.warning(
                "mail %d: attempt %d failed (%s)%s",
                item.id,
                item.attempts,
                error,
                ", given up" if given_up else "",
            )
            continue
        async with sessions() as db:
            await mark_sent(db, message_id=item.id)
        sent += 1
    return sent, failed


async def purge_outbox(db: AsyncSession, *, older_than: datetime, batch: int) -> int:
    """Delete one batch of messages sent or given up before `older_than`."""
    done = or_(OutboxMessage.sent_at < older_than, OutboxMessage.failed_at < older_than)
    return await delete_batch(db, OutboxMessage.id, done, batch=batch)
