"""Accounts: registration, the password check of a login, and the account lifecycle
(reset, verification, password and e-mail change, name, deletion).

Every change that is proved by a link goes through `links.consume_link` (one conditional
UPDATE: of racing uses exactly one wins) inside the transaction that applies it, so a
change that fails (an address taken meanwhile) leaves its token unused. Mail is written to
the outbox in the same transaction; a link mail is composed when it is sent
(`compose_link`), its token minted then.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from settings import Settings

from ..audit import account_ref
from ..crypto.passwords import PasswordHasher
from ..db import read_one
from ..errors import (
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidLinkToken,
    ValidationFailed,
    WrongPassword,
)
from ..mail import Message, link_url, notice
from ..models import OutboxMessage, User, utcnow
from .links import (
    ALL_PURPOSES,
    CREDENTIAL_PURPOSES,
    Purpose,
    consume_link,
    find_link,
    issue_link,
    void_pending,
)
from .outbox import Claimed, enqueue, enqueue_link
from .sessions import restart_session, revoke_sessions


@dataclass(frozen=True)
class LinkRules:
    """Where links point and how long each purpose's token lives."""

    frontend_url: str
    lifetimes: dict[str, timedelta]

    @classmethod
    def of(cls, settings: Settings) -> LinkRules:
        return cls(
            frontend_url=settings.frontend_url,
            lifetimes={
                "password_reset": settings.password_reset_token_expires,
                "email_verify": settings.email_verify_token_expires,
                "email_change": settings.email_change_token_expires,
            },
        )


# -- registration and login ------------------------------------------------------------


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


#: A login's lookup, built once: every column of the active user with this address.
USER_BY_EMAIL = select(*User.__table__.columns).where(
    User.email == bindparam("email"), User.is_active.is_(True)
)


async def authenticate(
    db: AsyncSession,
    *,
    hasher: PasswordHasher,
    email: str,
    password: str,
    require_verified: bool = False,
) -> User:
    """The user with these credentials (detached, every column loaded); an unknown email
    costs the same as a wrong password.

    The lookup runs on the driver (`db.read_one`), outside `db`, so no pooled connection
    (and no transaction) waits on the hashing queue: under a login storm the pool stays
    free for the requests that only need the database. With `require_verified`, an
    unproved address is `EmailNotVerified`, but only once the password checked out (the
    answer tells nothing to someone without it).
    """
    row = await read_one(USER_BY_EMAIL, {"email": email})
    user = None if row is None else _detached_user(row)
    if not await hasher.verify(password, user.password_hash if user else None) or user is None:
        raise InvalidCredentials(account=account_ref(email))
    if require_verified and user.email_verified_at is None:
        raise EmailNotVerified(user=user.public_id)
    if hasher.needs_rehash(user.password_hash):
        # only if it is still the hash just checked: a password changed meanwhile wins
        old, new = user.password_hash, await hasher.hash(password)
        result = await db.execute(
            update(User)
            .where(User.id == user.id, User.password_hash == old)
            .values(password_hash=new)
            .execution_options(synchronize_session=False)
        )
        await db.commit()
        if result.rowcount:  # type: ignore[attr-defined]
            set_committed_value(user, "password_hash", new)
    return user


def _detached_user(row: Any) -> User:
    """A `User` of a row with every column, as if loaded by a session and detached."""
    user = User(**row._asdict())
    make_transient_to_detached(user)
    return user


# -- links by mail ---------------------------------------------------------------------


async def request_link(db: AsyncSession, *, kind: Purpose, email: str) -> None:
    """Queue a link mail of `kind` for whoever has `email` and commit: the same two
    statements whether or not an account has it (the sender finds out, later)."""
    enqueue_link(db, kind=kind, to=email, user_id=None)
    await db.commit()


async def compose_link(db: AsyncSession, claim: Claimed, *, rules: LinkRules) -> Message | None:
    """The mail of a claimed link message, with a newly minted token (committed), or
    None when there is nobody to send it to: no active account with the address, an
    address already proved, a new address taken meanwhile."""
    kind, to = claim.kind, claim.message.to
    if kind == "email_change":
        user = await db.get(User, claim.user_id) if claim.user_id is not None else None
        taken = await db.scalar(select(User.id).where(User.email == to))
        target = to
    else:
        user, taken = await find_user_by_email(db, email=to), None
        target = user.email if user is not None else to
    if user is None or not user.is_active or taken is not None:
        return None
    if kind == "email_verify" and user.email_verified_at is not None:
        return None
    lifetime = rules.lifetimes[kind]
    purpose: Purpose = kind  # type: ignore[assignment]  # one of the three link kinds
    raw = await issue_link(
        db, user_id=user.id, purpose=purpose, lifetime=lifetime, target_email=target
    )
    await db.commit()
    return notice(kind, to=to, link=link_url(rules.frontend_url, kind, raw), lifetime=lifetime)


async def _consume(db: AsyncSession, *, raw: str, purpose: Purpose) -> tuple[User, str | None]:
    """Use a token once and load its active user; `InvalidLinkToken` (rolled back)
    otherwise."""
    consumed = await consume_link(db, raw=raw, purpose=purpose)
    user = await db.get(User, consumed.user_id) if consumed is not None else None
    if consumed is None or user is None or not user.is_active:
        await db.rollback()
        raise InvalidLinkToken()
    return user, consumed.target_email


async def reset_password(
    db: AsyncSession, *, hasher: PasswordHasher, raw: str, password: str, notify: bool
) -> User:
    """Set a new password with a reset token: every session ends, the address counts as
    proved (the mail arrived), other reset links and a pending address change are voided
    (whoever asked for it must not finish it now), a notice is mailed. A token mailed to
    an address the account no longer has is refused.

    An unusable token costs no bcrypt (it is looked up first); of racing resets with
    one token, the conditional UPDATE lets exactly one through."""
    if await find_link(db, raw=raw, purpose="password_reset") is None:
        await db.rollback()
        raise InvalidLinkToken()
    await db.commit()  # no transaction waits on bcrypt
    password_hash = await hasher.hash(password)
    user, target = await _consume(db, raw=raw, purpose="password_reset")
    if target is not None and target != user.email:  # sent to an address it no longer has
        await db.rollback()
        raise InvalidLinkToken()
    user.password_hash = password_hash
    user.email_verified_at = user.email_verified_at or utcnow()
    await void_pending(db, user_id=user.id, purposes=CREDENTIAL_PURPOSES)
    await revoke_sessions(db, user_id=user.id, reason="password_reset")
    if notify:
        enqueue(db, message=notice("password_changed", to=user.email), user_id=user.id)
    await db.commit()
    return user


async def check_password(
    db: AsyncSession, *, hasher: PasswordHasher, user_id: int, password: str
) -> User:
    """The user, once `password` is theirs (`WrongPassword` otherwise)."""
    user = await db.get(User, user_id)
    await db.commit()
    if user is None or not await hasher.verify(password, user.password_hash):
        raise WrongPassword(user=user.public_id if user else None)
    return user


async def change_password(
    db: AsyncSession,
    *,
    hasher: PasswordHasher,
    user_id: int,
    session_id: uuid.UUID,
    current: str,
    new: str,
    lifetime: timedelta,
    notify: bool,
) -> tuple[User, int]:
    """Change the password of a logged-in user who gave the current one: every other
    session ends, reset links and a pending address change are voided, this session
    moves to a new generation (the one returned) with a new lifetime, a notice is
    mailed."""
    if current == new:
        raise ValidationFailed(
            [{"field": "new_password", "message": "must differ from the current password"}]
        )
    user = await check_password(db, hasher=hasher, user_id=user_id, password=current)
    old, new_hash = user.password_hash, await hasher.hash(new)
    changed = await db.execute(
        update(User)  # only over the hash just checked: a racing change wins, not both
        .where(User.id == user.id, User.password_hash == old)
        .values(password_hash=new_hash, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        await db.rollback()
        raise WrongPassword(user=user.public_id)
    set_committed_value(user, "password_hash", new_hash)
    await void_pending(db, user_id=user.id, purposes=CREDENTIAL_PURPOSES)
    await revoke_sessions(db, user_id=user.id, reason="password_changed", keep=session_id)
    generation = await restart_session(db, session_id=session_id, lifetime=lifetime)
    if notify:
        enqueue(db, message=notice("password_changed", to=user.email), user_id=user.id)
    await db.commit()
    await db.refresh(user)
    return user, generation


async def verify_email(db: AsyncSession, *, raw: str) -> User:
    """Prove the address with its verification token: only the address it was sent to
    (a token from before an e-mail change proves nothing)."""
    user, target = await _consume(db, raw=raw, purpose="email_verify")
    if target != user.email:
        await db.rollback()
        raise InvalidLinkToken()
    user.email_verified_at = user.email_verified_at or utcnow()
    await db.commit()
    return user


async def request_email_change(
    db: AsyncSession, *, hasher: PasswordHasher, user_id: int, password: str, new_email: str
) -> User:
    """Queue the confirmation link to `new_email` and a notice to the current address,
    once the password checked out; nothing changes until the link is used."""
    user = await check_password(db, hasher=hasher, user_id=user_id, password=password)
    if new_email == user.email:
        raise ValidationFailed(
            [{"field": "new_email", "message": "must differ from the current address"}]
        )
    if await db.scalar(select(User.id).where(User.email == new_email)) is not None:
        raise EmailTaken()
    enqueue_link(db, kind="email_change", to=new_email, user_id=user.id)
    enqueue(db, message=notice("email_change_requested", to=user.email), user_id=user.id)
    await db.commit()
    return user


async def confirm_email_change(
    db: AsyncSession, *, raw: str, keep: uuid.UUID | None = None
) -> tuple[User, str]:
    """Move the account to the address its token was sent to (proved by the mail), void
    every other link (reset links of the old address included), end every session but
    `keep`; the user and the old address. An address taken meanwhile is
    `EmailTaken`, and the token stays unused."""
    user, target = await _consume(db, raw=raw, purpose="email_change")
    if target is None:
        await db.rollback()
        raise InvalidLinkToken()
    old = user.email
    user.email, user.email_verified_at = target, utcnow()
    try:
        await db.flush()
    except IntegrityError:
        await db.rollback()
        raise EmailTaken() from None
    await void_pending(db, user_id=user.id, purposes=ALL_PURPOSES)  # the old mailbox opens nothing
    await revoke_sessions(db, user_id=user.id, reason="email_changed", keep=keep)
    await db.commit()
    return user, old


async def update_name(db: AsyncSession, *, user_id: int, name: str) -> User:
    user = await db.get_one(User, user_id)
    user.name = name
    await db.commit()
    return user


async def delete_account(db: AsyncSession, *, user_id: int) -> User | None:
    """Delete the user with their sessions, tokens and mail (the foreign keys cascade;
    link mail queued by address, before anyone knew whose, goes too); None if gone."""
    user = await db.get(User, user_id)
    if user is None:
        return None
    await db.execute(
        delete(OutboxMessage).where(
            OutboxMessage.user_id.is_(None),  # another user's change to this address stays
            OutboxMessage.to_address == user.email,  # sent or not: no address is kept
        )
    )
    await db.delete(user)
    await db.commit()
    return user
