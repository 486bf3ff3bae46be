"""The hot path's PostgreSQL reads (`statements.py` has the rest of the hot path).

asyncpg's `fetch` on a connection of SQLAlchemy's pool (asyncpg prepares the statement
once per connection). A connection found dead (PostgreSQL restarted, a failover) is
discarded with every pooled connection as old as it, as SQLAlchemy does, and the read
runs once more on a new one; one cut short by the deadline is terminated, never reused.
The reads of a statement that arrive while one of its reads is on its way go out
together as soon as it is back, in one round trip (`Batcher`): each still runs in the
database after its request arrived.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from .statements import Compiled, Statements

#: SQLSTATE classes of a connection that is gone: connection exceptions (08), and the
#: server shutting down or restarting (57P01-57P03).
DEAD_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")


class _DeadConnection(Exception):
    """The pooled connection turned out to be gone (and is now discarded)."""


class PostgresStatements(Statements):
    """Reads with asyncpg's own `fetch` on a connection of SQLAlchemy's pool; the reads
    of a statement that arrive while one of its reads is on its way go out together,
    in one round trip, as soon as it is back (`Batcher`)."""

    def __init__(self, engine: AsyncEngine, *, deadline: float) -> None:
        super().__init__(engine)
        #: Seconds a read may take, connecting, the wait for a read on its way and the
        #: retry on a new connection included (DB_CHECK_TIMEOUT: a partition is a 503
        #: at once instead of a held request). Reads sent together have it too.
        self.deadline = deadline
        self.batchers: dict[int, Batcher] = {}

    async def one(self, statement: Executable, values: Mapping[str, Any]) -> Any | None:
        compiled = self.compiled(statement)
        batcher = self.batchers.get(id(statement))
        if batcher is None:  # the compiled entry keeps the statement, so its id stays its own
            batcher = self.batchers[id(statement)] = Batcher(self, compiled)
        async with asyncio.timeout(self.deadline):  # waiting for a read on its way included
            return compiled.one(await batcher.read(compiled.parameters(values)))

    async def fetch(self, sql: str, parameters: list[Any]) -> list[Any]:
        """The rows of one statement; a connection found dead is discarded and the
        statement runs once more on a new one."""
        try:
            return await self._fetch(sql, parameters)
        except _DeadConnection:
            pass
        try:
            return await self._fetch(sql, parameters)
        except _DeadConnection as dead:  # a new connection, dead too: the database is down
            raise OperationalError(
                sql, None, dead.__cause__ or dead, connection_invalidated=True
            ) from None

    async def _fetch(self, sql: str, parameters: list[Any]) -> list[Any]:
        connection = await self.checkout()
        driver: Any = connection.driver_connection  # asyncpg.Connection
        try:
            return list(await driver.fetch(sql, *parameters))
        except (TimeoutError, asyncio.CancelledError):
            # cut short, it may still be answered: close the socket now and never reuse it
            driver.terminate()
            connection.invalidate()
            raise
        except Exception as error:
            if driver.is_closed() or _means_dead(error):
                # what SQLAlchemy does on a disconnect: this one and every pooled
                # connection as old as it are replaced
                self.engine.sync_engine.pool._invalidate(connection, error)  # noqa: SLF001
                raise _DeadConnection() from error
            # SQLAlchemy's class by the driver's error's name (InterfaceError, …), as its
            # own path raises it
            raise DBAPIError.instance(
                sql, None, error, Exception, dialect=self.engine.dialect
            ) from None
        finally:
            await greenlet_spawn(connection.close)  # back to the pool


#: A read waiting to go out: its parameters, and the future its rows go to.
Read = tuple[list[Any], asyncio.Future[list[Any]]]


def _fail(reads: list[Read], error: BaseException) -> None:
    for _, future in reads:
        if future.done():
            continue
        if isinstance(error, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(error)


class Batcher:
    """The reads of one statement, sent together while one is on its way.

    A read that finds none of its statement's on the way goes out at once, alone, as
    the statement itself (in its request's task, as it would without batching). Reads
    that arrive meanwhile wait for it to come back and then go out together, as one
    statement that runs the original once per read
    (`batched_sql`: a LATERAL join over the reads' parameters, each read's own rows
    told apart by their ordinal). So every read still runs in the database after its
    request arrived (nothing is cached: a revocation committed before a request is seen
    by its read), and under load one round trip, one connection checkout and one
    wake-up of the loop serve every read that queued during the last one.

    Reads that went out together do so from a task of their own: a request that stops
    waiting (its client gone, its deadline passed) takes its read out and cuts nobody
    else's short."""

    def __init__(self, statements: PostgresStatements, compiled: Compiled) -> None:
        self.statements = statements
        self.sql = compiled.sql
        self.batched_sql = batched_sql(compiled, statements.engine.dialect)
        #: A read of the statement is on its way: the reads that arrive now wait.
        self.busy = False
        self.waiting: list[Read] = []
        self.sender: asyncio.Task[None] | None = None

    async def read(self, parameters: list[Any]) -> list[Any]:
        """The rows of the statement for `parameters`, read after this call began."""
        if self.busy:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self.waiting.append((parameters, future))
            return await future
        self.busy = True  # none on its way: this read goes now, as the statement itself
        try:
            return await self.statements.fetch(self.sql, parameters)
        finally:
            self._send_the_waiting()

    def _send_the_waiting(self) -> None:
        if self.waiting:
            self.sender = asyncio.ensure_future(self._send())
        else:
            self.busy = False

    async def _send(self) -> None:
        try:
            while self.waiting:
                reads = [read for read in self.waiting if not read[1].done()]
                self.waiting = []
                if reads:
                    await self._round_trip(reads)
        finally:
            self.busy = False
            self.sender = None

    async def _round_trip(self, reads: list[Read]) -> None:
        together = self.batched_sql if len(reads) > 1 else self.sql
        if together is None:
            return await self._one_by_one(reads)
        try:
            async with asyncio.timeout(self.statements.deadline):
                if len(reads) == 1:
                    rows = [await self.statements.fetch(together, reads[0][0])]
                else:
                    rows = await self._together(together, reads)
        except DBAPIError as error:
            if len(reads) > 1 and not error.connection_invalidated:
                # one read's values may be what the database refused: each alone, anew
                return await self._one_by_one(reads)
            _fail(reads, error)
            return None
        except BaseException as error:  # the deadline, or cancelled: the loop is closing
            _fail(reads, error)
            if not isinstance(error, Exception):
                raise
            return None
        for (_, future), found in zip(reads, rows, strict=True):
            if not future.done():
                future.set_result(found)
        return None

    async def _one_by_one(self, reads: list[Read]) -> None:
        for read in reads:
            await self._round_trip([read])

    async def _together(self, sql: str, reads: list[Read]) -> list[list[Any]]:
        """Each read's rows, from one statement over the reads' parameters as arrays."""
        arrays = [list(values) for values in zip(*(read[0] for read in reads), strict=True)]
        rows: list[list[Any]] = [[] for _ in reads]
        for row in await self.statements.fetch(sql, arrays):
            rows[row[0] - 1].append(tuple(row)[1:])  # b.n, the read's ordinal, from 1
        return rows


def batched_sql(compiled: Compiled, dialect: Any) -> str | None:
    """`compiled`'s statement run once for each row of parameter arrays, in one statement:
    `SELECT b.n, q.* FROM unnest($1::T1[], …) WITH ORDINALITY AS b(p1, …, n) CROSS JOIN
    LATERAL (<the statement with $k read from b.pk>) AS q`, ordered as the arrays. None
    for a statement without parameters, or with one whose type it does not give (the
    arrays need it): its reads go out one by one."""
    binds = [compiled.compiled.binds[name] for name in compiled.compiled.positiontup or ()]
    if not binds or any(bind.type._isnull for bind in binds):  # noqa: SLF001
        return None
    types = [bind.type.compile(dialect=dialect) for bind in binds]
    arrays = ", ".join(f"${k}::{kind}[]" for k, kind in enumerate(types, 1))
    columns = ", ".join(f"p{k}" for k in range(1, len(binds) + 1))
    inner = _PLACEHOLDER.sub(r"b.p\1", compiled.sql)
    return (  # built from a compiled statement and its types, never from a value
        f"SELECT b.n, q.* FROM unnest({arrays}) WITH ORDINALITY AS b({columns}, n)"  # noqa: S608
        f" CROSS JOIN LATERAL ({inner}) AS q"
    )


#: asyncpg's positional placeholders; a compiled statement has no literal that holds one.
_PLACEHOLDER = re.compile(r"\$(\d+)\b")


def _means_dead(error: Exception) -> bool:
    if isinstance(error, OSError):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(DEAD_CONNECTION_SQLSTATES)
