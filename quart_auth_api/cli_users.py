"""The operators' commands on users: readable output, never a hash or a token.

quart --app quart_auth_api users list [--limit 50] [--offset 0]
quart --app quart_auth_api users show EMAIL         # fields, second factor, live sessions
quart --app quart_auth_api users disable EMAIL      # and revoke every session
quart --app quart_auth_api users enable EMAIL
quart --app quart_auth_api users revoke-sessions EMAIL
quart --app quart_auth_api users reset-mfa EMAIL    # lost authenticator and codes
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TypeVar

import click
from quart import Quart
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from settings import Settings

from . import extensions
from .audit import audit
from .db import create_engine
from .logs import printable
from .models import AuthSession, User
from .services import mfa, users
from .services.sessions import list_sessions

T = TypeVar("T")


def init_app(app: Quart) -> None:
    _init_users(app, extensions.settings(app))


def _init_users(app: Quart, settings: Settings) -> None:
    run = partial(_in_database, settings)

    @app.cli.group("users")
    def users_group() -> None:
        """The accounts: list, show, disable, enable, revoke sessions, reset MFA."""

    @users_group.command("list")
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
    @click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
    def list_command(limit: int, offset: int) -> None:
        """Users, oldest first, with their count of live sessions."""
        rows, total = run(partial(_list_users, limit=limit, offset=offset))
        if rows:
            click.echo(_table(USER_COLUMNS, [_user_line(row) for row in rows]))
        shown = f"{offset + 1}-{offset + len(rows)}" if rows else "none"
        click.echo(f"users {shown} of {total}")

    @users_group.command("show")
    @click.argument("email")
    def show_command(email: str) -> None:
        """One user's fields and live sessions."""
        user, factor, sessions = run(partial(_show_user, email=email))
        click.echo(_user_card(user, factor=factor, live_sessions=len(sessions)))
        if sessions:
            click.echo(_table(SESSION_COLUMNS, [_session_line(s) for s in sessions]))

    @users_group.command("disable")
    @click.argument("email")
    def disable_command(email: str) -> None:
        """Disable the account: no login, and every session revoked at once."""
        done = run(partial(users.set_active, email=email, active=False))
        audit("user_disabled", user=done.user, sessions=done.sessions, by="operator")
        click.echo(f"disabled {_cell(users.normalised(email))}: {_sessions(done.sessions)} revoked")

    @users_group.command("enable")
    @click.argument("email")
    def enable_command(email: str) -> None:
        """Enable the account again: the user can log in."""
        done = run(partial(users.set_active, email=email, active=True))
        audit("user_enabled", user=done.user, by="operator")
        click.echo(f"enabled {_cell(users.normalised(email))}")

    @users_group.command("revoke-sessions")
    @click.argument("email")
    def revoke_sessions_command(email: str) -> None:
        """Revoke every session of the user: each device must log in again."""
        done = run(partial(users.revoke_all, email=email))
        audit("sessions_revoked", user=done.user, sessions=done.sessions, by="operator")
        click.echo(f"revoked {_sessions(done.sessions)} of {_cell(users.normalised(email))}")

    @users_group.command("reset-mfa")
    @click.argument("email")
    def reset_mfa_command(email: str) -> None:
        """Remove the user's second factor and recovery codes and revoke every session
        (a lost authenticator and lost codes: make sure who is asking first)."""
        notify = settings.mail_backend != "none"
        user = run(partial(_reset_mfa, email=email, notify=notify))
        audit("mfa_factor_removed", user=user, by="operator")
        click.echo(
            f"removed the second factor of {_cell(users.normalised(email))}: every session revoked"
        )


def _in_database(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work` in one session of an engine without a pool, disposed after; an unknown
    address or a database failure is one line of error (exit code 1), not a traceback."""

    async def run() -> T:
        engine = create_engine(settings, poolclass=NullPool)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as db:
                return await work(db)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except users.UnknownUser as error:
        raise click.ClickException(f"no user has the address {_cell(error.email)}") from None
    except (SQLAlchemyError, OSError) as error:
        raise click.ClickException(f"database error: {type(error).__name__}") from None


async def _list_users(
    db: AsyncSession, *, limit: int, offset: int
) -> tuple[list[users.UserRow], int]:
    return await users.list_users(db, limit=limit, offset=offset), await users.count_users(db)


async def _show_user(db: AsyncSession, *, email: str) -> tuple[User, bool, list[AuthSession]]:
    user = await users.find_user(db, email=email)
    if user is None:
        raise users.UnknownUser(users.normalised(email))
    factor = await mfa.has_factor(db, user_id=user.id)
    return user, factor, await list_sessions(db, user_id=user.id)


async def _reset_mfa(db: AsyncSession, *, email: str, notify: bool) -> uuid.UUID:
    user = await users.find_user(db, email=email)
    if user is None:
        raise users.UnknownUser(users.normalised(email))
    if not await mfa.remove_factor(db, user_id=user.id, keep=None, notify=notify):
        raise click.ClickException(f"{_cell(user.email)} has no second factor")
    return user.public_id


USER_COLUMNS = ("EMAIL", "NAME", "ACTIVE", "VERIFIED", "LIVE SESSIONS", "CREATED (UTC)")
SESSION_COLUMNS = ("ID", "CREATED (UTC)", "LAST USED (UTC)", "IP", "USER AGENT")


def _user_line(row: users.UserRow) -> tuple[str, ...]:
    live, created = str(row.live_sessions), _at(row.created_at)
    return (row.email, row.name, _yes(row.active), _yes(row.verified), live, created)


def _user_card(user: User, *, factor: bool, live_sessions: int) -> str:
    """The user's fields, one a line: never the password hash."""
    fields = {
        "email": user.email,
        "name": user.name,
        "id": str(user.public_id),
        "active": _yes(user.is_active),
        "verified": _at(user.email_verified_at) if user.email_verified_at else "no",
        "second factor": "totp" if factor else "no",
        "created": _at(user.created_at),
        "updated": _at(user.updated_at),
        "live sessions": str(live_sessions),
    }
    return "\n".join(f"{name + ':':<15}{_cell(value)}" for name, value in fields.items())


def _session_line(session: AuthSession) -> tuple[str, ...]:
    created, used = _at(session.created_at), _at(session.last_used_at)
    return (str(session.id), created, used, session.ip or "-", session.user_agent or "-")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned under their headers; what a user wrote is made printable, and cut
    but in the first column (the address or id an operator copies)."""
    cells = [
        list(headers),
        *([_cell(v, 0 if i == 0 else 60) for i, v in enumerate(r)] for r in rows),
    ]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _cell(value: str, width: int = 0) -> str:
    """No control character reaches the terminal (an escape sequence in a name or a user
    agent), and no cell is wider than `width` (0: any width)."""
    value = printable(value)
    return value if not width or len(value) <= width else value[: width - 1] + "…"


def _sessions(count: int) -> str:
    return f"{count} session" if count == 1 else f"{count} sessions"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")
