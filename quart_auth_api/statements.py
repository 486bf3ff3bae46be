"""The hot path's statements, compiled once and run on the database driver itself.

`db.read_one()` (the guard's check, on every request) and `db.write()` (the rotation of
a refresh token) come here instead of going through SQLAlchemy's execution: each
statement is compiled once per dialect, its parameters and columns keep SQLAlchemy's own
conversions, and what runs per request is the driver's call.

- **SQLite, reads**: on the event loop, on the worker's own read-only connection of the
  standard `sqlite3` module (a lookup by primary key takes microseconds). It never waits:
  its busy timeout is 0, and when SQLite answers busy or locked (a rare moment of WAL
  recovery or an exclusive lock) the read runs in aiosqlite's thread instead, which
  waits as every other connection does. `bench/loop_stall.py` measures how long the loop
  is held under concurrent writes.
- **SQLite, writes**: in aiosqlite's thread, one call that is its own transaction.
- **PostgreSQL, reads**: `statements_postgres.py`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import namedtuple
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

#: SQLite's primary result codes for "try later" (extended codes keep them in the low
#: byte): busy, locked, and the WAL's "protocol" (a read that kept losing a race).
TRY_LATER = frozenset({5, 6, 15})


class Compiled:
    """One statement compiled for one dialect, with SQLAlchemy's conversions of its
    parameters (in the driver's positional order) and of its columns."""

    def __init__(self, statement: Executable, dialect: Any) -> None:
        self.statement = statement  # kept: the cache is keyed by its id
        self.compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql: str = self.compiled.string
        self.binds = [
            (name, self.compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in self.compiled.positiontup or ()
        ]
        columns = list(getattr(statement, "selected_columns", ()))
        self.row: Any = namedtuple("Row", [column.key for column in columns])  # type: ignore[misc]
        self.columns = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        given = self.compiled.construct_params(values)  # with the statement's own literals
        return [
            given[name] if process is None else process(given[name]) for name, process in self.binds
        ]

    def one(self, rows: Sequence[Sequence[Any]]) -> Any | None:
        """The one row of `rows`, its columns converted; None for no row."""
        if not rows:
            return None
        if len(rows) > 1:
            raise RuntimeError("read_one: the query found more than one row")
        return self.row._make(
            value if process is None else process(value)
            for value, process in zip(rows[0], self.columns, strict=True)
        )


class Statements:
    """The compiled statements of one engine, each compiled on first use."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.cache: dict[int, Compiled] = {}

    def compiled(self, statement: Executable) -> Compiled:
        found = self.cache.get(id(statement))
        if found is None:  # the entry keeps the statement alive, so its id stays its own
            found = self.cache[id(statement)] = Compiled(statement, self.engine.dialect)
        return found

    async def checkout(self) -> Any:
        """A connection of the engine's pool; a failure to connect arrives as SQLAlchemy
        raises it on its own path (its `DBAPIError` family: the 503 of an outage)."""
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            return await self.engine.raw_connection()
        except dbapi.Error as error:
            raise DBAPIError.instance(
                None, None, error, dbapi.Error, dialect=self.engine.dialect
            ) from None

    def close(self) -> None:
        """Release what the statements hold beside the engine's pool."""


class SqliteStatements(Statements):
    """Reads on the event loop (a read-only `sqlite3` connection of this worker's own,
    which never waits), writes and busy reads in aiosqlite's thread.

    Through SQLAlchemy's cursor one statement takes four or five trips to aiosqlite's
    thread (cursor, execute, fetch, close, end of transaction); here a write is one trip,
    and a read none (bench/README.md)."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        super().__init__(engine)
        self.path = _plain_file(url)
        self._reader: sqlite3.Connection | None = None
        #: Reads that found the database busy and ran in the thread instead.
        self.busy_reads = 0

    async def one(self, statement: Executable, values: Mapping[str, Any]) -> Any | None:
        compiled = self.compiled(statement)
        parameters = compiled.parameters(values)
        if self.path is not None:
            try:
                return compiled.one(self._read(compiled.sql, parameters))
            except sqlite3.Error as error:  # as SQLAlchemy raises it, unless it is "try later"
                code = getattr(error, "sqlite_errorcode", None)
                if code is None or code & 0xFF not in TRY_LATER:
                    raise _as_sqlalchemy(compiled.sql, error) from None
                self.busy_reads += 1
        return compiled.one(await self._in_thread(compiled.sql, parameters, "execute_fetchall"))

    async def rowcount(self, statement: Executable, values: Mapping[str, Any]) -> int:
        compiled = self.compiled(statement)
        parameters = compiled.parameters(values)
        cursor = await self._in_thread(compiled.sql, parameters, "execute", autocommit=True)
        return int(cursor.rowcount)

    def _read(self, sql: str, parameters: list[Any]) -> list[Any]:
        """The rows, read now: one statement in autocommit, a snapshot of what is committed."""
        if self._reader is None:
            self._reader = _open_reader(self.path)  # type: ignore[arg-type]
        return self._reader.execute(sql, parameters).fetchall()

    async def _in_thread(
        self, sql: str, parameters: list[Any], method: str, *, autocommit: bool = False
    ) -> Any:
        """The call in aiosqlite's thread, run to its end even when the request is
        cancelled (its client gone): cut off, the restore of the isolation level could
        come while the call still waits in aiosqlite's queue, which would then BEGIN a
        transaction that nobody ends, on a pooled connection holding SQLite's lock."""
        work = asyncio.ensure_future(self._call_in_thread(sql, parameters, method, autocommit))
        work.add_done_callback(_retrieve)  # a failure nobody awaits any more is not logged
        return await asyncio.shield(work)

    async def _call_in_thread(
        self, sql: str, parameters: list[Any], method: str, autocommit: bool
    ) -> Any:
        connection = await self.checkout()
        driver: Any = connection.driver_connection  # aiosqlite.Connection
        level = driver.isolation_level
        try:
            if autocommit:  # the statement is its own transaction, committed in that call
                driver.isolation_level = None
            return await getattr(driver, method)(sql, parameters)
        except sqlite3.Error as error:  # locked, unreadable: as SQLAlchemy raises it
            raise _as_sqlalchemy(sql, error) from None
        finally:
            driver.isolation_level = level
            await greenlet_spawn(connection.close)  # to the pool, or closed: the driver awaits

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _as_sqlalchemy(sql: str, error: sqlite3.Error) -> DatabaseError:
    """A `sqlite3` error as SQLAlchemy's own path raises it (an outage's
    `OperationalError`: locked, unreadable; else `DatabaseError`)."""
    if isinstance(error, sqlite3.OperationalError):
        return OperationalError(sql, None, error)
    return DatabaseError(sql, None, error)


def _plain_file(url: str) -> str | None:
    """The database file of a SQLite URL, or None when it is not a plain file (memory, a
    URI filename): such a database is read in the thread, on the pool's connections."""
    parsed = make_url(url)
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:") or "uri" in parsed.query:
        return None
    return name


def _open_reader(path: str) -> sqlite3.Connection:
    """A connection that never writes and never waits for a lock: autocommit (each read
    sees what is committed), `query_only`, busy timeout 0 (busy is an answer at once).
    It never creates the file (`mode=rw`): that is the engine's, made private first."""
    uri = f"{Path(path).absolute().as_uri()}?mode=rw"
    reader = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
    try:
        reader.execute("PRAGMA query_only=ON")
    except sqlite3.Error:
        reader.close()
        raise
    return reader


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a finished task's exception as seen (its caller may have been cancelled)."""
    if not task.cancelled():
        task.exception()
