"""What the operators' CLI needs: users listed with their count of live sessions, one
user found by address, an account disabled (every session revoked with it, in one
transaction) or enabled, a user's sessions revoked. Addresses match lower-cased, as
registration stores them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import AuthSession, User, utcnow
from .links import ALL_PURPOSES, void_pending
from .sessions import revoke_sessions


class UnknownUser(LookupError):
    """No user has this address."""

    def __init__(self, email: str) -> None:
        super().__init__(email)
        self.email = email


@dataclass(frozen=True, slots=True)
class UserRow:
    """One line of `users list`: never the password hash."""

    email: str
    name: str
    active: bool
    verified: bool
    created_at: datetime
    live_sessions: int


@dataclass(frozen=True, slots=True)
class Revoked:
    """What a change did: to which user (public id), and how many sessions it revoked."""

    user: uuid.UUID
    sessions: int


def normalised(email: str) -> str:
    """The address as registration stores it."""
    return email.strip().lower()


async def list_users(db: AsyncSession, *, limit: int, offset: int) -> list[UserRow]:
    """Users, oldest first, `limit` of them from `offset`, each with their live sessions."""
    live = (
        select(func.count())
        .select_from(AuthSession)
        .where(
            AuthSession.user_id == User.id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
        .scalar_subquery()
    )
    rows = await db.execute(
        select(User.email, User.name, User.is_active, User.email_verified_at, User.created_at)
        .add_columns(live.label("live_sessions"))
        .order_by(User.created_at, User.id)
        .limit(limit)
        .offset(offset)
    )
    return [
        UserRow(
            email=row.email,
            name=row.name,
            active=row.is_active,
            verified=row.email_verified_at is not None,
            created_at=row.created_at,
            live_sessions=int(row.live_sessions),
        )
        for row in rows
    ]


async def count_users(db: AsyncSession) -> int:
    """How many users there are, active or not."""
    return int(await db.scalar(select(func.count()).select_from(User)) or 0)


async def find_user(db: AsyncSession, *, email: str) -> User | None:
    """The user with this address, active or not."""
    return await db.scalar(select(User).where(User.email == normalised(email)))


async def set_active(db: AsyncSession, *, email: str, active: bool) -> Revoked:
    """Enable or disable the account and commit; the sessions revoked with it.

    The user's row is updated (and locked) first, then every live session is revoked in
    the same transaction: a login racing the change either commits its session before
    (and it is revoked here) or waits for the lock. Enabling revokes too: a session of a
    disabled account can only come from such a race, and must not come back to life."""
    row = (
        await db.execute(
            update(User)
            .where(User.email == normalised(email))
            .values(is_active=active, updated_at=utcnow())
            .returning(User.id, User.public_id)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if row is None:
        await db.rollback()
        raise UnknownUser(normalised(email))
    revoked = await revoke_sessions(db, user_id=row.id, reason="user_disabled")
    if not active:  # its links die with it: enabling it again brings none back
        await void_pending(db, user_id=row.id, purposes=ALL_PURPOSES)
    await db.commit()
    return Revoked(row.public_id, revoked)


async def revoke_all(db: AsyncSession, *, email: str) -> Revoked:
    """Revoke every session of the user (they must log in again) and commit."""
    user = await find_user(db, email=email)
    if user is None:
        raise UnknownUser(normalised(email))
    revoked = await revoke_sessions(db, user_id=user.id, reason="revoked_by_operator")
    await db.commit()
    return Revoked(user.public_id, revoked)
