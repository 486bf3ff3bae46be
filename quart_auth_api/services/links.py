"""One-time link tokens: issue one for a purpose, consume it once.

A token is 32 random bytes in the link (`crypto.digests.new_link_token`); the table
keeps its SHA-256 digest, its purpose (`password_reset`, `email_verify`,
`email_change`), its user, the target address of an e-mail change, its expiry and
when it was used. Consuming is one conditional UPDATE (the ROTATE pattern): of any
number of racing uses of one token exactly one sets `used_at`, and its row count
decides. An unknown, expired, used or wrong-purpose token is one answer: None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..crypto.digests import link_digest, new_link_token
from ..db import delete_batch
from ..models import AccountToken, OutboxMessage, User, utcnow

Purpose = Literal["password_reset", "email_verify", "email_change"]
ALL_PURPOSES: tuple[Purpose, ...] = ("password_reset", "email_verify", "email_change")
#: What a password alone can ask for: voided when a credential changes under it.
CREDENTIAL_PURPOSES: tuple[Purpose, ...] = ("password_reset", "email_change")


@dataclass(frozen=True)
class ConsumedLink:
    """What a consumed token was for."""

    user_id: int
    target_email: str | None


async def issue_link(
    db: AsyncSession,
    *,
    user_id: int,
    purpose: Purpose,
    lifetime: timedelta,
    target_email: str | None = None,
) -> str:
    """A new token of `purpose` for the user, voiding the older ones of that purpose;
    added to `db` without committing (the caller commits it with the mail that carries
    it). The raw token is returned and stored nowhere. The user's row is locked first
    (PostgreSQL), so that of two tokens issued at once the later voids the earlier."""
    # FOR NO KEY UPDATE: it does not wait on (or hold up) a session insert's key share
    await db.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
    await void_links(db, user_id=user_id, purpose=purpose)
    raw, digest = new_link_token()
    now = utcnow()
    db.add(
        AccountToken(
            digest=digest,
            purpose=purpose,
            user_id=user_id,
            target_email=target_email,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    await db.flush()
    return raw


async def consume_link(db: AsyncSession, *, raw: str, purpose: Purpose) -> ConsumedLink | None:
    """Use the token once (one UPDATE … WHERE used_at IS NULL); None when it is unknown,
    expired, already used or of another purpose. The caller commits."""
    now = utcnow()
    result = await db.execute(
        update(AccountToken)
        .where(
            AccountToken.digest == link_digest(raw),
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(AccountToken.user_id, AccountToken.target_email)
        .execution_options(synchronize_session=False)
    )
    row = result.one_or_none()
    return None if row is None else ConsumedLink(row.user_id, row.target_email)


async def find_link(db: AsyncSession, *, raw: str, purpose: Purpose) -> int | None:
    """The id of the token if it could be used now (consuming it may still lose a race)."""
    return await db.scalar(
        select(AccountToken.id).where(
            AccountToken.digest == link_digest(raw),
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > utcnow(),
        )
    )


async def void_links(
    db: AsyncSession, *, user_id: int, purpose: Purpose | tuple[Purpose, ...]
) -> int:
    """Mark every unused token of the user and purpose (or purposes) as used; how many
    there were."""
    purposes = (purpose,) if isinstance(purpose, str) else purpose
    result = await db.execute(
        update(AccountToken)
        .where(
            AccountToken.user_id == user_id,
            AccountToken.purpose.in_(purposes),
            AccountToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def void_pending(db: AsyncSession, *, user_id: int, purposes: tuple[Purpose, ...]) -> None:
    """Void every link of the user and `purposes` still pending: its unused tokens, and its
    mails not sent yet (a link mail is composed, its token minted, only when it is sent:
    a credential changed under it, so that token must never be minted). The caller
    commits."""
    await void_links(db, user_id=user_id, purpose=purposes)
    await db.execute(
        delete(OutboxMessage)
        .where(
            OutboxMessage.user_id == user_id,
            OutboxMessage.kind.in_(purposes),
            OutboxMessage.sent_at.is_(None),
            OutboxMessage.failed_at.is_(None),
        )
        .execution_options(synchronize_session=False)
    )


async def purge_links(db: AsyncSession, *, older_than: datetime, batch: int) -> int:
    """Delete one batch of tokens used or expired before `older_than`."""
    spent = or_(AccountToken.used_at < older_than, AccountToken.expires_at < older_than)
    return await delete_batch(db, AccountToken.id, spent, batch=batch)
