"""Accounts: registration and the password check of a login."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit import account_ref
from ..crypto.passwords import PasswordHasher
from ..errors import EmailTaken, InvalidCredentials
from ..models import User


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
    """The user with these credentials; an unknown email costs the same as a wrong password.

    The read's transaction ends before the bcrypt check (it commits whatever `db` holds),
    so no pooled connection (and no transaction) waits on the hashing queue: under a
    login storm the pool stays free for the requests that only need the database.
    """
    user = await find_user_by_email(db, email=email)
    await db.commit()  # expire_on_commit=False: the row stays loaded
    if not await hasher.verify(password, user.password_hash if user else None) or user is None:
        raise InvalidCredentials(account=account_ref(email))
    if hasher.needs_rehash(user.password_hash):
        # only if it is still the hash just checked: a password changed meanwhile wins
        old, new = user.password_hash, await hasher.hash(password)
        await db.execute(
            update(User)
            .where(User.id == user.id, User.password_hash == old)
            .values(password_hash=new)
            .execution_options(synchronize_session=False)
        )
    return user
