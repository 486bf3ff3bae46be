"""Use cases on an `AsyncSession`: the only module that builds SQL.

Each function takes the session first and keyword-only arguments after it; the
one that writes commits last.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from .audit import account_ref
from .errors import EmailTaken, InvalidCredentials, RefreshTokenReused, TokenRevoked
from .models import AuthSession, User, utcnow
from .security import PasswordHasher

MAX_USER_AGENT = 512


@dataclass(frozen=True)
class LiveSession:
    """The result of the per-request check: the user and their session's state."""

    user: User
    session_id: uuid.UUID
    generation: int
    rotated_at: datetime | None


@dataclass(frozen=True)
class Client:
    """Who opened a session (for the session row, never for authorisation)."""

    user_agent: str | None
    ip: str | None


async def register_user(db: AsyncSession, *, email: str, password_hash: str, name: str) -> User:
    """Create a user; a taken email (case-insensitive) is `EmailTaken`, even when racing."""
    if await db.scalar(select(User.id).where(User.email == email)) is not None:
        raise EmailTaken()
    user = User(email=email, name=name, password_hash=password_hash)
    db.add(user)
    try:
        await db.flush()
    except IntegrityError:
        await db.rollback()
        raise EmailTaken() from None
    return user


async def find_user_by_email(db: AsyncSession, *, email: str) -> User | None:
    return await db.scalar(select(User).where(User.email == email, User.is_active.is_(True)))


async def authenticate(
    db: AsyncSession, *, hasher: PasswordHasher, email: str, password: str
) -> User:
    """The user with these credentials; an unknown email costs the same as a wrong password."""
    user = await find_user_by_email(db, email=email)
    if not await hasher.verify(password, user.password_hash if user else None) or user is None:
        raise InvalidCredentials(account=account_ref(email))
    if hasher.needs_rehash(user.password_hash):
        user.password_hash = await hasher.hash(password)
    return user


async def open_session(
    db: AsyncSession, *, user: User, client: Client, lifetime: timedelta
) -> AuthSession:
    """Open a login session for `user` and commit it (with the user, on registration)."""
    now = utcnow()
    session = AuthSession(
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        expires_at=now + lifetime,
        user_agent=(client.user_agent or "")[:MAX_USER_AGENT] or None,
        ip=client.ip,
    )
    db.add(session)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise EmailTaken() from None
    return session


async def load_live_session(
    db: AsyncSession, *, session_id: uuid.UUID, user_public_id: uuid.UUID
) -> LiveSession | None:
    """One indexed query: the session is not revoked or expired and its user is active."""
    row = (
        await db.execute(
            select(User, AuthSession.generation, AuthSession.rotated_at)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(
                AuthSession.id == session_id,
                AuthSession.revoked_at.is_(None),
                AuthSession.expires_at > utcnow(),
                User.public_id == user_public_id,
                User.is_active.is_(True),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    user, generation, rotated_at = row
    return LiveSession(user, session_id, generation, rotated_at)


async def rotate_refresh(
    db: AsyncSession,
    *,
    live: LiveSession,
    token_generation: int,
    lifetime: timedelta,
    reuse_interval: timedelta,
) -> int:
    """Rotate the session for a refresh token of `token_generation`; return the generation
    the new tokens must carry.

    Exactly one of several refreshes racing with one token bumps the generation.
    The previous generation is honoured (nothing rotates) for `reuse_interval`
    after a rotation; any older token is a replay and revokes the session.
    """
    now = utcnow()
    if token_generation == live.generation:
        bumped = await db.execute(
            update(AuthSession)
            .where(
                AuthSession.id == live.session_id,
                AuthSession.generation == token_generation,
                AuthSession.revoked_at.is_(None),
            )
            .values(
                generation=AuthSession.generation + 1,
                rotated_at=now,
                last_used_at=now,
                expires_at=now + lifetime,
            )
            .execution_options(synchronize_session=False)
        )
        if bumped.rowcount == 1:  # type: ignore[attr-defined]
            await db.commit()
            return token_generation + 1
        live = await _reload(db, live)  # another request rotated first
    if _within_reuse_interval(live, token_generation, now, reuse_interval):
        await db.commit()
        return live.generation
    await revoke_session(db, session_id=live.session_id, reason="refresh_reuse")
    raise RefreshTokenReused(user=live.user.public_id, sid=live.session_id)


def _within_reuse_interval(
    live: LiveSession, token_generation: int, now: datetime, interval: timedelta
) -> bool:
    return (
        interval > timedelta(0)  # 0 turns the grace off, even for a request racing the rotation
        and token_generation == live.generation - 1
        and live.rotated_at is not None
        and now - live.rotated_at <= interval
    )


async def _reload(db: AsyncSession, live: LiveSession) -> LiveSession:
    row = (
        await db.execute(
            select(AuthSession.generation, AuthSession.rotated_at, AuthSession.revoked_at).where(
                AuthSession.id == live.session_id
            )
        )
    ).one()
    if row.revoked_at is not None:
        await db.rollback()
        raise TokenRevoked()
    return LiveSession(live.user, live.session_id, row.generation, row.rotated_at)


async def revoke_session(db: AsyncSession, *, session_id: uuid.UUID, reason: str) -> bool:
    """Revoke a session (its access and refresh tokens stop working); commit."""
    result = await db.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def check_database(db: AsyncSession) -> bool:
    """True when the database answers a trivial query."""
    try:
        await db.execute(text("SELECT 1"))
    except (OSError, TimeoutError, SQLAlchemyError):
        return False
    return True


async def purge_sessions(db: AsyncSession, *, older_than: datetime, batch: int) -> int:
    """Delete one batch of sessions that expired or were revoked before `older_than`.

    Returns the number of rows deleted; call again until it is below `batch`. Safe in
    several workers at once: PostgreSQL skips rows another purge has locked.
    """
    doomed = (
        select(AuthSession.id)
        .where(or_(AuthSession.expires_at < older_than, AuthSession.revoked_at < older_than))
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = await db.execute(
        delete(AuthSession)
        .where(AuthSession.id.in_(doomed.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


async def count_live_sessions(db: AsyncSession) -> int:
    """Sessions neither revoked nor expired."""
    live = await db.scalar(
        select(func.count())
        .select_from(AuthSession)
        .where(AuthSession.revoked_at.is_(None), AuthSession.expires_at > utcnow())
    )
    return int(live or 0)
