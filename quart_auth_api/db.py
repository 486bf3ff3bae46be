"""Engine, sessions and the request's `AsyncSession`.

The engine and session factory live on `app.extensions["db"]`, opened in
`before_serving` and disposed in `after_serving`; each request gets one lazily
created `AsyncSession`, closed at teardown. The hot path (the guard's check on every
request, the rotation of a refresh token) runs single statements through
`run_statement()` instead: a pooled connection outside any explicit transaction, so
no BEGIN/ROLLBACK round trips and no ORM unit of work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from quart import Quart, current_app, g
from sqlalchemy import MetaData, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 15_000

T = TypeVar("T")

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


def create_engine(settings: Settings, **options: Any) -> AsyncEngine:
    """Build the async engine with the pool and timeouts from settings.

    PostgreSQL: bounded connect and statement times, so an outage answers 503 quickly
    instead of hanging. SQLite: WAL, a busy timeout and foreign keys on every connection.
    """
    if "poolclass" not in options:
        options |= {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout.total_seconds(),
            "pool_recycle": int(settings.db_pool_recycle.total_seconds()),
        }
    if not settings.is_sqlite:
        return create_async_engine(
            settings.database_url,
            pool_pre_ping=settings.db_pool_pre_ping,
            hide_parameters=True,
            connect_args={
                "timeout": settings.db_connect_timeout.total_seconds(),
                "command_timeout": settings.db_command_timeout.total_seconds(),
            },
            **options,
        )
    engine = create_async_engine(
        settings.database_url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        hide_parameters=True,
        **options,
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_database(settings: Settings) -> Database:
    engine = create_engine(settings)
    # SQLite: the driver begins a transaction only before a write, and switching its
    # isolation level costs two trips to aiosqlite's thread; PostgreSQL: an attribute.
    direct = (
        engine if settings.is_sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")
    )
    return Database(engine, async_sessionmaker(engine, expire_on_commit=False), direct)


async def run_statement(
    statement: Callable[[AsyncConnection], Awaitable[T]], *, retry: bool = False
) -> T:
    """Run `statement` (one statement, committed when it writes) on a pooled connection.

    With `retry` (only for reads): when the connection turns out to be dead, e.g. after
    the database restarted, SQLAlchemy discards it and every pooled connection as old
    as it, and the statement runs once more on a new one instead of failing the request.
    """
    database: Database = current_app.extensions["db"]
    try:
        async with database.direct.begin() as connection:
            return await statement(connection)
    except DBAPIError as error:
        if not (retry and error.connection_invalidated):
            raise
    async with database.direct.begin() as connection:
        return await statement(connection)


def init_app(app: Quart) -> None:
    @app.before_serving
    async def _open() -> None:
        app.extensions["db"] = open_database(app.extensions["settings"])

    @app.after_serving
    async def _close() -> None:
        database: Database | None = app.extensions.pop("db", None)
        if database is not None:
            await database.engine.dispose()

    @app.teardown_appcontext
    async def _close_session(_error: BaseException | None) -> None:
        session: AsyncSession | None = g.pop("_db_session", None)
        if session is not None:
            await session.close()


async def schema_problem(settings: Settings) -> str | None:
    """Why the database's schema is not at the migrations' head, or None when it is."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.pool import NullPool

    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    engine = create_engine(settings, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()
    if current == head:
        return None
    return f"the database schema is at {current or 'nothing'}, the migrations at {head}"


def alembic_config(settings: Settings) -> Any:
    """Alembic's configuration for this project, on `settings.database_url`."""
    from alembic.config import Config

    from settings import PROJECT_ROOT

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.database_url
    return config


def get_db() -> AsyncSession:
    """The current request's session, created on first use."""
    session: AsyncSession | None = g.get("_db_session")
    if session is None:
        database: Database = current_app.extensions["db"]
        session = g._db_session = database.sessionmaker()
    return session
