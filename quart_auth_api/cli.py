"""Maintenance: the session purge and the mail sender, as CLI commands and as background
tasks of each worker (the operators' commands on users are `cli_users.py`).

    quart --app quart_auth_api purge-sessions            # once, in batches, with progress
    SESSION_PURGE_INTERVAL=3600 python run.py           # every hour in each worker
    quart --app quart_auth_api mail send-pending        # deliver what is due, then stop

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
from datetime import timedelta
from functools import partial
from typing import TypeVar

import click
from quart import Quart
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from settings import Settings

from . import extensions
from .db import DATABASE, create_engine
from .extensions import Slot
from .mail import Sender, sender_for
from .models import utcnow
from .services.accounts import LinkRules, compose_link
from .services.links import purge_links
from .services.mfa import purge_challenges, purge_pending_factors
from .services.outbox import Compose, deliver_due, purge_outbox
from .services.sessions import purge_sessions

log = logging.getLogger("quart_auth_api.maintenance")
T = TypeVar("T")

#: The background purge, when SESSION_PURGE_INTERVAL is set.
PURGE_TASK: Slot[asyncio.Task[None]] = Slot("session purge")
#: Each worker's mail sender, when MAIL_BACKEND is not `none`, and its stop signal.
MAIL_TASK: Slot[tuple[asyncio.Task[None], asyncio.Event]] = Slot("mail sender")
#: Seconds between two looks at the outbox.
MAIL_POLL = 2.0
#: What the purge deletes once it is older than SESSION_RETENTION: ended sessions, sent
#: or given-up mail, used or expired link tokens, ended MFA challenges and enrolments.
PURGES = (purge_sessions, purge_outbox, purge_links, purge_challenges, purge_pending_factors)


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
