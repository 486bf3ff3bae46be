"""Login sessions: open, check on every request, rotate on refresh, revoke, purge."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, exists, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit import account_ref
from ..client import Client
from ..crypto.tokens import assurance_level
from ..db import delete_batch, read_one, write
from ..errors import EmailTaken, InvalidCredentials, RefreshTokenReused, TokenRevoked
from ..models import AuthSession, MfaChallenge, TotpFactor, User, utcnow

MAX_USER_AGENT = 512


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The user of a live session as the guard's query read it: a read-only snapshot.

    To change the user, load the row in the request's session:
    `await get_db().get(User, current_user.id)`.
    """

    id: int
    public_id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    updated_at: datetime
    email_verified_at: datetime | None


@dataclass(frozen=True, slots=True)
class LiveSession:
    """The result of the per-request check: the user and their session's state."""

    user: CurrentUser
    session_id: uuid.UUID
    generation: int
    rotated_at: datetime | None
    #: How the session was authenticated (RFC 8176): `("pwd",)`, or with a second factor.
    amr: tuple[str, ...] = ("pwd",)

    @property
    def aal(self) -> str:
        """The session's assurance level, from its row (never from a token's claim)."""
        return assurance_level(self.amr)


async def open_session(
    db: AsyncSession,
    *,
    user: User,
    client: Client,
    lifetime: timedelta,
    checked_hash: str | None = None,
    amr: tuple[str, ...] = ("pwd",),
) -> AuthSession:
    """Open a login session for `user` and commit it (with the user, on registration).

    `checked_hash` is the password hash a login just checked: the session opens only if
    it is still the user's, read under a share lock after the insert, so that a login
    racing a password reset either sees the new password (and fails) or commits first
    (and the reset's revocation sees its session): never a session that outlives the
    reset on the old password. `amr` is how the login was authenticated."""
    session = AuthSession(user_id=user.id, **_new_session(client, lifetime, amr))
    db.add(session)
    try:
        await db.flush()
    except IntegrityError:
        await db.rollback()
        raise EmailTaken() from None
    if checked_hash is not None:
        current = await db.scalar(
            select(User.password_hash)
            .where(User.id == user.id, User.is_active.is_(True))  # nor disabled meanwhile
            .with_for_update(read=True)
        )
        if current != checked_hash:
            account = account_ref(user.email)  # before the rollback expires `user`
            await db.rollback()
            raise InvalidCredentials(account=account)
    await db.commit()
    return session


def _new_session(client: Client, lifetime: timedelta, amr: tuple[str, ...]) -> dict[str, Any]:
    """A new session's columns, but its user."""
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "created_at": now,
        "last_used_at": now,
        "expires_at": now + lifetime,
        "user_agent": (client.user_agent or "")[:MAX_USER_AGENT] or None,
        "ip": client.ip,
        "amr": " ".join(amr),
    }


_NEW_SESSION_COLUMNS = ("id", "created_at", "last_used_at", "expires_at", "user_agent", "ip", "amr")
#: A password login's session in one statement: only while the checked hash and the address
#: are still the user's, the user active and no confirmed factor guards the account, that
#: row read under a share lock on PostgreSQL (a reset's UPDATE waits for this commit, then
#: revokes the session; or this waits for the reset's and finds the new hash).
OPEN_CHECKED = insert(AuthSession).from_select(
    ["user_id", "generation", *_NEW_SESSION_COLUMNS],
    select(
        User.id,
        literal(0),
        *(
            bindparam(name, type_=AuthSession.__table__.c[name].type)
            for name in _NEW_SESSION_COLUMNS
        ),
    )
    .where(
        User.id == bindparam("user_id"),
        User.is_active.is_(True),
        User.password_hash == bindparam("checked_hash"),
        User.email == bindparam("email"),  # an e-mail change revokes sessions too
        ~exists().where(TotpFactor.user_id == User.id, TotpFactor.confirmed_at.is_not(None)),
    )
    .with_for_update(read=True),
)


async def open_checked_session(
    *, user: User, client: Client, lifetime: timedelta
) -> uuid.UUID | None:
    """`open_session` with `checked_hash`, one statement on the driver: the session's id, or
    None if a factor guards the account or the credentials changed (the caller tells which)."""
    values = _new_session(client, lifetime, ("pwd",))
    checked = {"user_id": user.id, "checked_hash": user.password_hash, "email": user.email}
    return values["id"] if await write(OPEN_CHECKED, {**values, **checked}) else None


#: The per-request check, built once: the session is neither revoked nor expired and
#: its user is active (primary-key lookup, then the user by primary key).
LIVE_SESSION = (
    select(
        User.id,
        User.public_id,
        User.email,
        User.name,
        User.created_at,
        User.updated_at,
        User.email_verified_at,
        AuthSession.generation,
        AuthSession.rotated_at,
        AuthSession.amr,
    )
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(
        AuthSession.id == bindparam("session_id"),
        AuthSession.revoked_at.is_(None),
        AuthSession.expires_at > bindparam("now"),
        User.public_id == bindparam("user_public_id"),
        User.is_active.is_(True),
    )
)


async def load_live_session(
    *, session_id: uuid.UUID, user_public_id: uuid.UUID
) -> LiveSession | None:
    """One indexed query (`db.read_one`, no ORM session): the session is not revoked or
    expired and its user is active."""
    parameters = {"session_id": session_id, "user_public_id": user_public_id, "now": utcnow()}
    row = await read_one(LIVE_SESSION, parameters)
    if row is None:
        return None
    user = CurrentUser(
        row.id,
        row.public_id,
        row.email,
        row.name,
        row.created_at,
        row.updated_at,
        row.email_verified_at,
    )
    return LiveSession(user, session_id, row.generation, row.rotated_at, tuple(row.amr.split()))


#: Rotation in the normal case: one statement that bumps the generation the refresh
#: token carries; none of several racing refreshes with one token can bump it twice.
ROTATE = (
    update(AuthSession)
    .where(
        AuthSession.id == bindparam("session_id"),
        AuthSession.generation == bindparam("token_generation"),
        AuthSession.revoked_at.is_(None),
    )
    .values(
        generation=AuthSession.generation + 1,
        rotated_at=bindparam("now"),
        last_used_at=bindparam("now"),
        expires_at=bindparam("expires_at"),
    )
    .execution_options(synchronize_session=False)
)


async def rotate_refresh(
    db: AsyncSession,
    *,
    live: LiveSession,
    token_generation: int,
    lifetime: timedelta,
    reuse_interval: timedelta,
) -> int:
    """A refresh with a token of `token_generation`: the generation the new tokens carry.

    The normal case is one statement (`try_rotate`); a token that did not rotate is
    settled in `db` (`settle_refresh`: the grace for the previous generation, or a
    replay that revokes the session).
    """
    if await try_rotate(live=live, token_generation=token_generation, lifetime=lifetime):
        return token_generation + 1
    return await settle_refresh(
        db, live=live, token_generation=token_generation, reuse_interval=reuse_interval
    )


async def try_rotate(*, live: LiveSession, token_generation: int, lifetime: timedelta) -> bool:
    """Bump the session's generation from `token_generation` (`db.write`, one statement);
    False when it is not the current one (a racing refresh rotated first, or an older
    token)."""
    if token_generation != live.generation:
        return False
    now = utcnow()
    parameters = {
        "session_id": live.session_id,
        "token_generation": token_generation,
        "now": now,
        "expires_at": now + lifetime,
    }
    return await write(ROTATE, parameters) == 1


async def settle_refresh(
    db: AsyncSession, *, live: LiveSession, token_generation: int, reuse_interval: timedelta
) -> int:
    """A refresh whose token `try_rotate` did not rotate: the generation the new tokens
    must carry, or `RefreshTokenReused` (and the session revoked).

    The previous generation is honoured (nothing rotates) for `reuse_interval` after a
    rotation (several tabs, or racing requests, with one token); any older token is a
    replay and revokes the session.
    """
    live = await _reload(db, live)
    if _within_reuse_interval(live, token_generation, utcnow(), reuse_interval):
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
        raise TokenRevoked()
    return LiveSession(live.user, live.session_id, row.generation, row.rotated_at, live.amr)


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


async def revoke_sessions(
    db: AsyncSession, *, user_id: int, reason: str, keep: uuid.UUID | None = None
) -> int:
    """Revoke every live session of the user but `keep`, and void the user's logins
    waiting for their second factor (an `mfa_token` must not open a session after its
    user's sessions were ended); how many sessions. The caller commits (with the change
    that made it necessary)."""
    await db.execute(delete(MfaChallenge).where(MfaChallenge.user_id == user_id))
    condition = [AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)]
    if keep is not None:
        condition.append(AuthSession.id != keep)
    result = await db.execute(
        update(AuthSession)
        .where(*condition)
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def revoke_user_session(
    db: AsyncSession, *, user_id: int, session_id: uuid.UUID, reason: str
) -> bool:
    """Revoke one live session, only if it is the user's (another user's is as unknown
    as no session at all); commit."""
    result = await db.execute(
        update(AuthSession)
        .where(
            AuthSession.id == session_id,
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def list_sessions(db: AsyncSession, *, user_id: int) -> list[AuthSession]:
    """The user's live sessions, newest first."""
    result = await db.scalars(
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
        .order_by(AuthSession.created_at.desc(), AuthSession.id)
    )
    return list(result)


async def restart_session(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    lifetime: timedelta,
    amr: tuple[str, ...] | None = None,
) -> int:
    """Move the session to a new generation after a credential change, with no grace for
    the refresh token it had (a replay of it is a reuse); the new generation. With
    `amr`, the session is now authenticated so (a second factor passed). The caller
    commits."""
    now = utcnow()
    values: dict[str, object] = {"amr": " ".join(amr)} if amr is not None else {}
    generation = await db.scalar(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(
            generation=AuthSession.generation + 1,
            rotated_at=None,
            last_used_at=now,
            expires_at=now + lifetime,
            **values,
        )
        .returning(AuthSession.generation)
        .execution_options(synchronize_session=False)
    )
    if generation is None:
        raise TokenRevoked()
    return int(generation)


async def purge_sessions(db: AsyncSession, *, older_than: datetime, batch: int) -> int:
    """Delete one batch of sessions that expired or were revoked before `older_than`
    (`db.delete_batch`); the rows deleted."""
    ended = or_(AuthSession.expires_at < older_than, AuthSession.revoked_at < older_than)
    return await delete_batch(db, AuthSession.id, ended, batch=batch)


async def count_live_sessions(db: AsyncSession) -> int:
    """Sessions neither revoked nor expired."""
    live = await db.scalar(
        select(func.count())
        .select_from(AuthSession)
        .where(AuthSession.revoked_at.is_(None), AuthSession.expires_at > utcnow())
    )
    return int(live or 0)
