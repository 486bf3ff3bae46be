"""Maintenance: the session purge and the mail sender, as CLI commands and as background
tasks of each worker; the operators' commands on users.

    quart --app quart_auth_api purge-sessions            # once, in batches, with progress
    SESSION_PURGE_INTERVAL=3600 python run.py           # every hour in each worker
    quart --app quart_auth_api mail send-pending        # deliver what is due, then stop
    quart --app quart_auth_api users list [--limit 50] [--offset 0]
    quart --app quart_auth_api users show EMAIL         # fields and live sessions
    quart --app quart_auth_api users disable EMAIL      # and revoke every session
    quart --app quart_auth_api users enable EMAIL
    quart --app quart_auth_api users revoke-sessions EMAIL

Sessions that expired or were revoked, mail sent or given up, and link tokens used or
expired, longer ago than `SESSION_RETENTION` (7 days by default: recent revocations stay
visible for investigation), are deleted in batches of `SESSION_PURGE_BATCH`, each its
own short transaction, so writers never wait long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
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
from .db import DATABASE, create_engine
from .extensions import Slot
from .logs import printable
from .mail import Sender, sender_for
from .models import AuthSession, User, utcnow
from .services import users
from .services.accounts import LinkRules, compose_link
from .services.links import purge_links
from .services.outbox import Compose, deliver_due, purge_outbox
from .services.sessions import list_sessions, purge_sessions

log = logging.getLogger("quart_auth_api.maintenance")
T = TypeVar("T")

#: The background purge, when SESSION_PURGE_INTERVAL is set.
PURGE_TASK: Slot[asyncio.Task[None]] = Slot("session purge")
#: Each worker's mail sender, when MAIL_BACKEND is not `none`, and its stop signal.
MAIL_TASK: Slot[tuple[asyncio.Task[None], asyncio.Event]] = Slot("mail sender")
#: Seconds between two looks at the outbox.
MAIL_POLL = 2.0
#: What the purge deletes once it is older than SESSION_RETENTION: ended sessions, sent
#: or given-up mail, used or expired link tokens.
PURGES = (purge_sessions, purge_outbox, purge_links)


async def purge_all(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    retention: timedelta,
    batch: int,
    progress: bool = False,
) -> int:
    """Purge batch after batch, table after table (`PURGES`), until a batch comes back
    short; the rows deleted."""
    older_than = utcnow() - retention
    total = 0
    for purge in PURGES:
        while True:
            async with sessionmaker() as db:
                deleted = await purge(db, older_than=older_than, batch=batch)
            total += deleted
            if progress:
                click.echo(f"purged {total} rows so far")
            if deleted < batch:
                break
    return total


def init_app(app: Quart) -> None:
    settings = extensions.settings(app)
    _init_mail(app, settings)
    _init_users(app, settings)

    @app.cli.command("purge-sessions")
    def purge_sessions_command() -> None:
        """Delete sessions, sent mail and spent link tokens older than SESSION_RETENTION."""
        started = time.monotonic()
        total = asyncio.run(_purge_once(settings))
        click.echo(f"purge-sessions: {total} rows deleted in {time.monotonic() - started:.1f}s")

    interval = settings.session_purge_interval.total_seconds()
    if interval <= 0:
        return

    @app.before_serving
    async def _start_purging() -> None:
        PURGE_TASK.put(app, asyncio.create_task(_purge_forever(app, interval)))

    @app.after_serving
    async def _stop_purging() -> None:
        task = PURGE_TASK.pop(app)
        if task is not None:
            await _cancelled(task)


async def _purge_once(settings: Settings) -> int:
    engine = create_engine(settings, poolclass=NullPool)
    try:
        return await purge_all(
            async_sessionmaker(engine, expire_on_commit=False),
            retention=settings.session_retention,
            batch=settings.session_purge_batch,
            progress=True,
        )
    finally:
        await engine.dispose()


async def _purge_forever(app: Quart, interval: float) -> None:
    settings = extensions.settings(app)
    while True:
        await asyncio.sleep(interval)
        database = DATABASE.find(app)
        if database is None:  # not open yet, or closing
            continue
        try:
            total = await purge_all(
                database.sessionmaker,
                retention=settings.session_retention,
                batch=settings.session_purge_batch,
            )
        except (SQLAlchemyError, OSError, TimeoutError) as error:  # try again next time
            log.error("session purge failed: %s", type(error).__name__)
            continue
        if total:
            log.info("session purge: %d rows deleted", total)


def _init_mail(app: Quart, settings: Settings) -> None:
    @app.cli.group("mail")
    def mail_group() -> None:
        """The outbox of mail."""

    @mail_group.command("send-pending")
    def send_pending_command() -> None:
        """Deliver every message that is due now, with progress, then stop."""
        sender = sender_for(settings)
        if sender is None:
            raise click.ClickException("MAIL_BACKEND=none: nothing can be sent (use smtp)")
        started = time.monotonic()
        sent, failed = asyncio.run(_send_pending(settings, sender, composer(settings)))
        elapsed = time.monotonic() - started
        click.echo(f"mail send-pending: {sent} sent, {failed} failed in {elapsed:.1f}s")

    sender = sender_for(settings)
    if sender is None:
        return

    @app.before_serving
    async def _start_sending() -> None:
        stop = asyncio.Event()
        MAIL_TASK.put(app, (asyncio.create_task(_send_forever(app, sender, stop)), stop))

    @app.after_serving
    async def _stop_sending() -> None:
        running = MAIL_TASK.pop(app)
        if running is None:
            return
        task, stop = running
        stop.set()  # the message being sent is finished and marked, no other is started
        grace = 3 * settings.smtp_timeout.total_seconds()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), grace)
        await _cancelled(task)


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def composer(settings: Settings) -> Compose:
    """What composes link mail when it is sent, with this service's links and lifetimes."""
    return partial(compose_link, rules=LinkRules.of(settings))


async def _send_pending(settings: Settings, sender: Sender, compose: Compose) -> tuple[int, int]:
    engine = create_engine(settings, poolclass=NullPool)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    sent = failed = 0
    try:
        while True:
            batch = await deliver_due(
                sessions, sender, max_attempts=settings.mail_max_attempts, compose=compose
            )
            if batch == (0, 0):
                return sent, failed
            sent, failed = sent + batch[0], failed + batch[1]
            click.echo(f"sent {sent}, failed {failed} so far")
    finally:
        await engine.dispose()


async def _send_forever(app: Quart, sender: Sender, stop: asyncio.Event) -> None:
    """Every MAIL_POLL seconds, deliver what is due, batch after batch until none is
    left, until `stop`; a database or SMTP outage only delays mail (it stays in the
    outbox)."""
    settings = extensions.settings(app)
    max_attempts, compose = settings.mail_max_attempts, composer(settings)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MAIL_POLL)
        if stop.is_set():
            return
        database = DATABASE.find(app)
        if database is None:  # not open yet, or closing
            continue
        try:
            while not stop.is_set():  # batch after batch while there is mail to send
                sent, failed = await deliver_due(
                    database.sessionmaker,
                    sender,
                    max_attempts=max_attempts,
                    compose=compose,
                    stop=stop,
                )
                if sent + failed == 0:
                    break
        except Exception as error:  # noqa: BLE001 (the sender must outlive any one failure)
            log.error("mail sender: %s; trying again in %.0fs", type(error).__name__, MAIL_POLL)


# -- users: the operators' commands --------------------------------------------------------


def _init_users(app: Quart, settings: Settings) -> None:
    run = partial(_in_database, settings)

    @app.cli.group("users")
    def users_group() -> None:
        """The accounts: list, show, disable, enable, revoke sessions."""

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
        user, sessions = run(partial(_show_user, email=email))
        click.echo(_user_card(user, live_sessions=len(sessions)))
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


async def _show_user(db: AsyncSession, *, email: str) -> tuple[User, list[AuthSession]]:
    user = await users.find_user(db, email=email)
    if user is None:
        raise users.UnknownUser(users.normalised(email))
    return user, await list_sessions(db, user_id=user.id)


USER_COLUMNS = ("EMAIL", "NAME", "ACTIVE", "VERIFIED", "LIVE SESSIONS", "CREATED (UTC)")
SESSION_COLUMNS = ("ID", "CREATED (UTC)", "LAST USED (UTC)", "IP", "USER AGENT")


def _user_line(row: users.UserRow) -> tuple[str, ...]:
    live, created = str(row.live_sessions), _at(row.created_at)
    return (row.email, row.name, _yes(row.active), _yes(row.verified), live, created)


def _user_card(user: User, *, live_sessions: int) -> str:
    """The user's fields, one a line: never the password hash."""
    fields = {
        "email": user.email,
        "name": user.name,
        "id": str(user.public_id),
        "active": _yes(user.is_active),
        "verified": _at(user.email_verified_at) if user.email_verified_at else "no",
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
