"""Engine, sessions and the request's `AsyncSession`.

The engine and session factory live in the `DATABASE` slot, opened in
`before_serving` and disposed in `after_serving`; each request gets one lazily
created `AsyncSession`, closed at teardown. The hot path skips the ORM unit of work and
SQLAlchemy's execution: the guard's check on every request is `read_one()`, the
rotation of a refresh token `write()`, each one statement run on the driver itself
(`statements.py`) outside any explicit transaction (no BEGIN/ROLLBACK round trips).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quart import Quart, g
from sqlalchemy import (
    ColumnElement,
    MetaData,
    Select,
    UpdateBase,
    delete,
    event,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from settings import INSTANCE_DIR, Settings

from . import extensions
from .extensions import Slot
from .statements import SqliteStatements
from .statements_postgres import PostgresStatements

SQLITE_BUSY_TIMEOUT_MS = 15_000
#: Milliseconds PostgreSQL keeps a session idle inside a transaction before ending it.
IDLE_IN_TRANSACTION = "60000"

#: A SELECT of any columns.
AnySelect = Select[*tuple[Any, ...]]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    #: The same pool; on PostgreSQL in autocommit, so one statement is one round trip.
    direct: AsyncEngine
    #: The hot path's statements, each compiled once and run on the driver.
    statements: SqliteStatements | PostgresStatements = field(repr=False)

    async def close(self) -> None:
        self.statements.close()
        await self.engine.dispose()


#: The database while the app serves.
DATABASE: Slot[Database] = Slot("database")


def create_engine(
    settings: Settings, *, statement_timeout: bool = True, **options: Any
) -> AsyncEngine:
    """Build the async engine with the pool and timeouts from settings.

    PostgreSQL: bounded connect and statement times (`statement_timeout=False` for
    migrations, whose statements may rightly take long), so that an outage or a
    partition answers 503 quickly instead of hanging; a connection whose statement
    timed out is terminated, never reused (`_never_reuse_after_a_timeout`). SQLite: WAL,
    a busy timeout and foreign keys on every connection.
    """
    if "poolclass" not in options:
        options |= {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout.total_seconds(),
            "pool_recycle": int(settings.db_pool_recycle.total_seconds()),
        }
    if not settings.is_sqlite:
        command_timeout = settings.db_command_timeout.total_seconds()
        engine = create_async_engine(
            settings.database_url,
            pool_pre_ping=settings.db_pool_pre_ping,
            hide_parameters=True,
            connect_args={
                "timeout": settings.db_connect_timeout.total_seconds(),
                "command_timeout": command_timeout if statement_timeout else None,
                # a transaction cut off by a partition gives its locks back within a minute
                "server_settings": {"idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION},
            },
            **options,
        )
        event.listen(engine.sync_engine, "handle_error", _never_reuse_after_a_timeout)
        return engine
    private_sqlite_files(settings.database_url)
    engine = create_async_engine(
        settings.database_url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        hide_parameters=True,
        # SQLAlchemy's connections and sessions end their transactions themselves, and
        # `read_one` begins none: a rollback at check-in would be one more thread trip
        pool_reset_on_return=None,
        **options,
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _never_reuse_after_a_timeout(context: Any) -> None:
    """A statement that timed out may still be answered: terminate its connection at once
    (a graceful close would wait on the same dead link) and never hand it out again.
    Only that connection: the others may be healthy."""
    if isinstance(context.original_exception, TimeoutError | asyncio.CancelledError):
        terminate(context.connection)
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def terminate(connection: Any) -> None:
    """Close an asyncpg connection's socket now, without a word to the server."""
    dbapi = getattr(getattr(connection, "connection", None), "dbapi_connection", None)
    driver = getattr(dbapi, "driver_connection", None)
    if driver is not None and not driver.is_closed():
        driver.terminate()


def private_sqlite_files(url: str) -> None:
    """Create the SQLite file readable by its owner only (0600) before SQLite does: it
    holds emails, password hashes and session addresses, and SQLite gives the WAL and
    shared-memory files the database file's mode. The project's own `instance/` is made
    0700, and what an older version left there open to group or others is closed; any
    other folder is the operator's (production refuses a file others can read)."""
    name = make_url(url).database
    if not name or name == ":memory:":
        return
    path = Path(name)
    if path.parent == INSTANCE_DIR:
        INSTANCE_DIR.mkdir(mode=0o700, exist_ok=True)
        for ours in (INSTANCE_DIR, path, *(Path(f"{path}{end}") for end in ("-wal", "-shm"))):
            if ours.exists() and ours.stat().st_mode & 0o077:
                ours.chmod(0o700 if ours.is_dir() else 0o600)
    elif not path.parent.is_dir():
        return  # another folder is the operator's to make: SQLite will say it is missing
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_database(settings: Settings) -> Database:
    engine = create_engine(settings)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    if settings.is_sqlite:  # the driver begins a transaction only before a write
        return Database(engine, sessions, engine, SqliteStatements(engine, settings.database_url))
    direct = engine.execution_options(isolation_level="AUTOCOMMIT")  # an attribute on asyncpg
    return Database(
        engine,
        sessions,
        direct,
        PostgresStatements(engine, deadline=settings.db_check_timeout.total_seconds()),
    )


async def read_one(select: AnySelect, parameters: Mapping[str, Any]) -> Any | None:
    """The one row (attributes named as the columns) `select` finds, or None: on the
    driver itself, without SQLAlchemy's execution (`statements.py`, `statements_postgres.py`).

    When the connection turns out to be dead, e.g. after PostgreSQL restarted, it is
    discarded with every pooled connection as old as it, and the read runs once more on
    a new one instead of failing the request. On PostgreSQL all of it, getting a
    connection and the retry included, has DB_CHECK_TIMEOUT: a partition answers 503 at
    once instead of holding the request; reads of the same statement that arrive while
    one is on its way go out together when it is back (`statements_postgres.Batcher`).
    """
    return await DATABASE.get().statements.one(select, parameters)


async def write(statement: UpdateBase, parameters: Mapping[str, Any]) -> int:
    """Run one UPDATE or DELETE as its own transaction; the number of rows it changed."""
    database = DATABASE.get()
    if isinstance(database.statements, SqliteStatements):
        return await database.statements.rowcount(statement, parameters)
    async with database.direct.begin() as connection:
        result = await connection.execute(statement, parameters)
    return int(result.rowcount)  # type: ignore[attr-defined]


def init_app(app: Quart) -> None:
    settings = extensions.settings(app)

    @app.before_serving
    async def _open() -> None:
        DATABASE.put(app, open_database(settings))

    @app.after_serving
    async def _close() -> None:
        database = DATABASE.pop(app)
        if database is not None:
            await database.close()

    @app.teardown_appcontext
    async def _close_session(_error: BaseException | None) -> None:
        session: AsyncSession | None = g.pop("_db_session", None)
        if session is not None:
            await session.close()


def get_db() -> AsyncSession:
    """The current request's session, created on first use."""
    session: AsyncSession | None = g.get("_db_session")
    if session is None:
        session = g._db_session = DATABASE.get().sessionmaker()
    return session


async def delete_batch(
    db: AsyncSession, id_column: Any, condition: ColumnElement[bool], *, batch: int
) -> int:
    """Delete up to `batch` rows of `id_column`'s table that meet `condition`, and commit;
    the rows deleted. Safe in several workers at once: PostgreSQL skips rows another
    purge has locked. Call again until it returns less than `batch`.

    The ids are read first, then deleted: inside `DELETE … WHERE id IN (SELECT … LIMIT)`
    PostgreSQL may run the subquery once per row, and its LIMIT then limits nothing."""
    doomed = list(
        await db.scalars(
            select(id_column).where(condition).limit(batch).with_for_update(skip_locked=True)
        )
    )
    if not doomed:
        await db.commit()
        return 0
    result = await db.execute(
        delete(id_column.class_)
        .where(id_column.in_(doomed), condition)
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


async def ping(db: AsyncSession) -> bool:
    """True when the database answers a trivial query."""
    try:
        await db.execute(text("SELECT 1"))
    except (OSError, TimeoutError, SQLAlchemyError):
        return False
    return True
