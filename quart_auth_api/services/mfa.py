"""The second factor: TOTP enrolment, the challenge that finishes a login, recovery codes,
removal.

Every single-use rule is one conditional UPDATE whose row count decides (the `ROTATE`
pattern of `sessions.py`), so that of racing requests exactly one wins:

- a code counts only for a time step later than the factor's `last_step`
  (`UPDATE ... WHERE last_step < :step`): no code is accepted twice, not even inside
  its 30 seconds, not even by two requests at once;
- a recovery code is spent by `UPDATE ... WHERE used_at IS NULL`;
- an `mfa_token` spends a try by `UPDATE ... WHERE attempts < 5`, and is used up by
  `UPDATE ... WHERE used_at IS NULL`.

Secrets are sealed (`crypto/sealing.py`); codes, tokens and recovery codes appear only
as digests, here and in the database.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..crypto import totp
from ..crypto.digests import link_digest, new_link_token
from ..crypto.sealing import Sealer, SealError
from ..db import delete_batch, read_one
from ..errors import (
    MfaAlreadyEnrolled,
    MfaInvalidCode,
    MfaTokenInvalid,
    NotFound,
    WrongMfaCode,
)
from ..mail import notice
from ..models import MfaChallenge, RecoveryCode, TotpFactor, User, utcnow
from .links import CREDENTIAL_PURPOSES, void_pending
from .outbox import enqueue
from .sessions import restart_session, revoke_sessions

log = logging.getLogger("quart_auth_api.mfa")

#: A factor not confirmed within this is void (enrol again).
PENDING_LIFETIME = timedelta(minutes=10)
#: An `mfa_token` lives this long, for this many tries.
CHALLENGE_LIFETIME = timedelta(seconds=300)
CHALLENGE_TRIES = 5
AMR_OTP: tuple[str, ...] = ("pwd", "otp")
AMR_RECOVERY: tuple[str, ...] = ("pwd", "recovery_code")


@dataclass(frozen=True)
class Enrolment:
    """A pending factor as its owner sees it once: the id and the plain secret."""

    factor_id: uuid.UUID
    secret: str


@dataclass(frozen=True)
class Challenge:
    """An `mfa_token` that has a try left, whose user it is, and the digest of the
    password hash it was opened under."""

    id: int
    user_id: int
    email: str
    password_digest: str


#: Whether a confirmed TOTP factor guards the account, built once.
CONFIRMED_FACTOR = select(TotpFactor.id).where(
    TotpFactor.user_id == bindparam("user_id"), TotpFactor.confirmed_at.is_not(None)
)


async def has_factor(db: AsyncSession, *, user_id: int) -> bool:
    """Whether the user has a confirmed TOTP factor, as `db`'s transaction sees it."""
    return await db.scalar(CONFIRMED_FACTOR, {"user_id": user_id}) is not None


async def factor_committed(*, user_id: int) -> bool:
    """Whether the user has a confirmed TOTP factor, as committed: one read on the
    driver (`db.read_one`), for a request that has no transaction of its own to ask
    (a login, the aal2 guard)."""
    return await read_one(CONFIRMED_FACTOR, {"user_id": user_id}) is not None


# -- enrolment ---------------------------------------------------------------------------


async def start_enrolment(db: AsyncSession, *, sealer: Sealer, user_id: int) -> Enrolment:
    """A new pending factor (replacing a pending one); `MfaAlreadyEnrolled` when the user
    has a confirmed one. Commits."""
    if await has_factor(db, user_id=user_id):
        raise MfaAlreadyEnrolled()
    await db.execute(
        delete(TotpFactor).where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_(None))
    )
    secret = totp.new_secret()
    factor = TotpFactor(
        user_id=user_id, secret=sealer.seal(secret), expires_at=utcnow() + PENDING_LIFETIME
    )
    db.add(factor)
    try:
        await db.commit()
    except IntegrityError:  # a racing enrolment (or confirmation) of the same user
        await db.rollback()
        raise MfaAlreadyEnrolled() from None
    return Enrolment(factor.id, secret)


async def confirm_enrolment(
    db: AsyncSession,
    *,
    sealer: Sealer,
    user_id: int,
    factor_id: uuid.UUID,
    code: str,
    session_id: uuid.UUID,
    lifetime: timedelta,
    notify: bool,
) -> tuple[list[str], int]:
    """Turn the pending factor on with a code it shows now: its first recovery codes, and
    the new generation of `session_id`, which is now `aal2` (`pwd otp`). Every other
    session is revoked and pending reset and address-change links are voided (a password
    alone opened them). A factor that is
    not this user's pending one, or expired, is `NotFound`; a wrong code `WrongMfaCode`.
    With `notify`, a notice is mailed. Commits."""
    now = utcnow()
    factor = await db.scalar(
        select(TotpFactor).where(
            TotpFactor.id == factor_id,
            TotpFactor.user_id == user_id,
            TotpFactor.confirmed_at.is_(None),
            TotpFactor.expires_at > now,
        )
    )
    if factor is None:
        raise NotFound("No pending factor with this id: enrol again.")
    step = _matching_step(sealer, factor, code)
    if step is None:
        raise WrongMfaCode()
    confirmed = await db.execute(
        update(TotpFactor)
        .where(TotpFactor.id == factor.id, TotpFactor.confirmed_at.is_(None))
        .values(confirmed_at=now, expires_at=None, last_step=step)
        .execution_options(synchronize_session=False)
    )
    if not confirmed.rowcount:  # type: ignore[attr-defined]  # a racing confirmation won
        raise WrongMfaCode()
    codes = await _replace_recovery_codes(db, user_id=user_id)
    generation = await restart_session(db, session_id=session_id, lifetime=lifetime, amr=AMR_OTP)
    # a credential change: what a password alone opened before (another session, a pending
    # address change or reset) must not outlast the factor
    await revoke_sessions(db, user_id=user_id, reason="mfa_enrolled", keep=session_id)
    await void_pending(db, user_id=user_id, purposes=CREDENTIAL_PURPOSES)
    await _notify(db, notify=notify, user_id=user_id, kind="mfa_enabled")
    await db.commit()
    return codes, generation


async def regenerate_recovery_codes(db: AsyncSession, *, user_id: int, notify: bool) -> list[str]:
    """Ten new recovery codes; the old ones stop working; with `notify`, a notice is
    mailed. Commits."""
    if not await has_factor(db, user_id=user_id):
        raise NotFound("There is no factor to make recovery codes for.")
    codes = await _replace_recovery_codes(db, user_id=user_id)
    await _notify(db, notify=notify, user_id=user_id, kind="mfa_recovery_codes_regenerated")
    await db.commit()
    return codes


async def _replace_recovery_codes(db: AsyncSession, *, user_id: int) -> list[str]:
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = totp.new_recovery_codes()
    now = utcnow()
    await db.execute(
        insert(RecoveryCode),
        [
            {"user_id": user_id, "digest": totp.recovery_digest(code), "created_at": now}
            for code in codes
        ],
    )
    return codes


async def remove_factor(
    db: AsyncSession, *, user_id: int, keep: uuid.UUID | None, notify: bool
) -> bool:
    """Remove the user's factor and recovery codes, and revoke every session but `keep`
    (None: all of them; `revoke_sessions` voids the open challenges too); False when
    there was no confirmed factor. With `notify`, a notice is mailed. Commits."""
    removed = await db.execute(
        delete(TotpFactor)
        .where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))
        .execution_options(synchronize_session=False)
    )
    if not removed.rowcount:  # type: ignore[attr-defined]
        return False
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    await revoke_sessions(db, user_id=user_id, reason="mfa_removed", keep=keep)
    await _notify(db, notify=notify, user_id=user_id, kind="mfa_removed")
    await db.commit()
    return True


async def _notify(db: AsyncSession, *, notify: bool, user_id: int, kind: str) -> None:
    """Mail the user a notice of `kind`, in the caller's transaction."""
    if notify:
        email = await db.scalar(select(User.email).where(User.id == user_id))
        if email is not None:
            enqueue(db, message=notice(kind, to=email), user_id=user_id)


# -- the login challenge -----------------------------------------------------------------


async def open_challenge(db: AsyncSession, *, user: User) -> str:
    """An `mfa_token` for a login whose password checked out (only its digest is kept,
    with a digest of the password hash it was checked against). Commits."""
    raw, digest = new_link_token()
    now = utcnow()
    db.add(
        MfaChallenge(
            digest=digest,
            user_id=user.id,
            password_digest=link_digest(user.password_hash),
            created_at=now,
            expires_at=now + CHALLENGE_LIFETIME,
        )
    )
    await db.commit()
    return raw


async def find_challenge(db: AsyncSession, *, raw: str) -> Challenge:
    """The live challenge of an `mfa_token` with a try left; `MfaTokenInvalid` otherwise
    (unknown, expired, used or out of tries: one answer)."""
    row = (
        await db.execute(
            select(MfaChallenge.id, MfaChallenge.user_id, User.email, MfaChallenge.password_digest)
            .join(User, User.id == MfaChallenge.user_id)
            .where(
                MfaChallenge.digest == link_digest(raw),
                MfaChallenge.used_at.is_(None),
                MfaChallenge.attempts < CHALLENGE_TRIES,
                MfaChallenge.expires_at > utcnow(),
                User.is_active.is_(True),
            )
        )
    ).one_or_none()
    if row is None:
        raise MfaTokenInvalid()
    return Challenge(row.id, row.user_id, row.email, row.password_digest)


async def spend_try(db: AsyncSession, *, challenge: Challenge) -> None:
    """Count one try of the challenge, committed before the code is looked at (a request
    that dies later has spent it); `MfaTokenInvalid` when none is left."""
    spent = await db.execute(
        update(MfaChallenge)
        .where(
            MfaChallenge.id == challenge.id,
            MfaChallenge.used_at.is_(None),
            MfaChallenge.attempts < CHALLENGE_TRIES,
            MfaChallenge.expires_at > utcnow(),
        )
        .values(attempts=MfaChallenge.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    if not spent.rowcount:  # type: ignore[attr-defined]
        raise MfaTokenInvalid()


async def pass_challenge(
    db: AsyncSession,
    *,
    sealer: Sealer,
    challenge: Challenge,
    code: str | None = None,
    recovery_code: str | None = None,
    notify: bool = False,
) -> tuple[User, tuple[str, ...]]:
    """Check a TOTP code (of a time step after the last one used) or spend a recovery
    code, and use the challenge up: the user and how they authenticated. Nothing is
    committed: the caller opens the session in this transaction (with the password hash
    the challenge was opened for, so a password changed meanwhile opens nothing)."""
    user = await db.get(User, challenge.user_id)
    if user is None or challenge.password_digest != link_digest(user.password_hash):
        raise MfaTokenInvalid()  # the password changed since the login: log in again
    if code is not None:
        await _spend_code(db, sealer=sealer, user=user, code=code)
        amr = AMR_OTP
    else:
        await _spend_recovery_code(db, user=user, code=recovery_code or "")
        await _notify(db, notify=notify, user_id=user.id, kind="mfa_recovery_code_used")
        amr = AMR_RECOVERY
    used = await db.execute(
        update(MfaChallenge)
        .where(MfaChallenge.id == challenge.id, MfaChallenge.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not used.rowcount:  # type: ignore[attr-defined]  # a racing try of this token won
        raise MfaTokenInvalid()
    return user, amr


async def _spend_code(db: AsyncSession, *, sealer: Sealer, user: User, code: str) -> None:
    factor = await db.scalar(
        select(TotpFactor).where(
            TotpFactor.user_id == user.id, TotpFactor.confirmed_at.is_not(None)
        )
    )
    secret, current = (None, False) if factor is None else _open(sealer, factor)
    step = None if secret is None else totp.matching_step(secret, code, utcnow())
    if factor is None or secret is None or step is None:
        raise MfaInvalidCode(user=user.public_id)
    values: dict[str, object] = {"last_step": step}
    if not current:
        values["secret"] = sealer.seal(secret)  # opened by a retired key: seal it anew
    advanced = await db.execute(
        update(TotpFactor)
        .where(
            TotpFactor.id == factor.id,
            or_(TotpFactor.last_step.is_(None), TotpFactor.last_step < step),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not advanced.rowcount:  # type: ignore[attr-defined]  # this step (or a later) was used
        raise MfaInvalidCode(user=user.public_id, replay=True)


async def _spend_recovery_code(db: AsyncSession, *, user: User, code: str) -> None:
    spent = await db.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.digest == totp.recovery_digest(code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not spent.rowcount:  # type: ignore[attr-defined]
        raise MfaInvalidCode(user=user.public_id, recovery_code=True)


def _open(sealer: Sealer, factor: TotpFactor) -> tuple[str | None, bool]:
    try:
        return sealer.open(factor.secret)
    except SealError:
        log.error(
            "a TOTP secret opens with none of the keys (MFA_ENCRYPTION_KEY, or SECRET_KEY "
            "when it is unset, changed?): factor %s can only be passed by a recovery code",
            factor.id,
        )
        return None, False


def _matching_step(sealer: Sealer, factor: TotpFactor, code: str) -> int | None:
    secret, _ = _open(sealer, factor)
    return None if secret is None else totp.matching_step(secret, code, utcnow())


async def purge_challenges(db: AsyncSession, *, older_than: datetime, batch: int) -> int:
    """Delete one batch of `mfa_token` challenges that expired before `older_than`."""
    ended = MfaChallenge.expires_at < older_than
    return await delete_batch(db, MfaChallenge.id, ended, batch=batch)


async def purge_pending_factors(db: AsyncSession, *, older_than: datetime, batch: int) -> int:
    """Delete one batch of factors never confirmed whose enrolment ended before
    `older_than`."""
    ended = TotpFactor.confirmed_at.is_(None) & (TotpFactor.expires_at < older_than)
    return await delete_batch(db, TotpFactor.id, ended, batch=batch)
