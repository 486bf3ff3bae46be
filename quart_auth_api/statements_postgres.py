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
import contextvars
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ARRAY, Executable
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
        batcher = self.batchers.get(id(statement))
        if batcher is None:  # the compiled entry keeps the statement, so its id stays its own
            batcher = self.batchers[id(statement)] = Batcher(self, self.compiled(statement))
        compiled = batcher.compiled
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
            future.exception()  # seen: a waiter cancelled before it wakes logs nothing


def _refused_value(error: DBAPIError) -> bool:
    """The database refused a value (SQLSTATE class 22, data exception), not a
    connection or the server: one read's parameters, which alone would fail."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


class Batcher:
    """The reads of one statement, sent together while one is on its way.

    A read that finds none of its statement's on the way goes out at once, alone, as
    the statement itself (in its request's task, as it would without batching). Reads
    that arrive meanwhile wait for it to come back and then go out together, as one
    statement that runs the original once per read (`batched_sql`: a LATERAL join over
    the reads' parameters, each read's own rows told apart by their ordinal). So every
    read still runs in the database after its request arrived (nothing is cached: a
    revocation committed before a request is seen by its read), and under load one
    round trip, one connection checkout and one wake-up of the loop serve every read
    that queued during the last one. When the database refuses one read's value (a
    data exception), the reads are run again one by one, so only that one fails.

    Reads that went out together do so from a task of their own: a request that stops
    waiting (its client gone, its deadline passed) before its read goes out is left
    out, and none cuts another's short. A read waits for at most one round trip before
    it goes out, and DB_CHECK_TIMEOUT covers both: when one read takes the database over
    half of it, the reads queued behind it answer 503 where each on a connection of its
    own might have made it in time."""

    def __init__(self, statements: PostgresStatements, compiled: Compiled) -> None:
        self.statements = statements
        self.compiled = compiled
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
        if self.waiting:  # in a context of its own, not the request's that happened to end
            loop = asyncio.get_running_loop()
            self.sender = loop.create_task(self._send(), context=contextvars.Context())
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
        sql = self.batched_sql if len(reads) > 1 else self.sql
        if sql is None:  # reads of a statement that cannot go out together
            return await self._one_by_one(reads)
        try:
            async with asyncio.timeout(self.statements.deadline):
                if len(reads) == 1:
                    rows = [await self.statements.fetch(sql, reads[0][0])]
                else:
                    rows = await self._together(sql, reads)
        except DBAPIError as error:
            if len(reads) > 1 and _refused_value(error):  # whose? each alone, anew
                return await self._one_by_one(reads)
            _fail(reads, error)  # the server, the connection: every read alike
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
            if not read[1].done():  # its request may have stopped waiting meanwhile
                await self._round_trip([read])

    async def _together(self, sql: str, reads: list[Read]) -> list[list[Any]]:
        """Each read's rows, from one statement over the reads' parameters as arrays."""
        arrays = [list(values) for values in zip(*(read[0] for read in reads), strict=True)]
        rows: list[list[Any]] = [[] for _ in reads]
        for row in await self.statements.fetch(sql, arrays):
            rows[row[0] - 1].append(tuple(row)[1:])  # the read's ordinal, from 1
        return rows


def batched_sql(compiled: Compiled, dialect: Any) -> str | None:
    """`compiled`'s statement run once for each row of parameter arrays, in one statement,
    its rows ordered as the arrays:

        SELECT qaa_reads.n, qaa_read.* FROM unnest($1::T1[], …) WITH ORDINALITY
        AS qaa_reads(p1, …, n) CROSS JOIN LATERAL (<the statement, $k::Tk read as
        qaa_reads.pk::Tk>) AS qaa_read

    Each array has the type of its parameter's cast in the statement (SQLAlchemy's own
    `render_bind_cast`, so `VARCHAR` without a length, which would cut a longer value:
    the batch finds what the statement alone finds). None, and the reads go out one by
    one, for a statement without parameters, or with one that it does not cast (its
    type left to the server) or that is an array itself (`unnest` would flatten it)."""
    casts = []
    for name in compiled.compiled.positiontup or ():
        kind = compiled.compiled.binds[name].type
        impl = kind._unwrapped_dialect_impl(dialect)  # noqa: SLF001  (as the compiler does)
        if kind._isnull or not impl.render_bind_cast or isinstance(impl, ARRAY):  # noqa: SLF001
            return None
        casts.append(compiled.compiled.render_bind_cast(kind, impl, ""))  # "::VARCHAR"
    inner, found = _PLACEHOLDER.subn(r"qaa_reads.p\1::", compiled.sql)
    if not casts or found != len(casts):  # every parameter once, each with its cast
        return None
    arrays = ", ".join(f"${k}{cast}[]" for k, cast in enumerate(casts, 1))
    columns = ", ".join(f"p{k}" for k in range(1, len(casts) + 1))
    return (  # built from a compiled statement and its casts, never from a value
        f"SELECT qaa_reads.n, qaa_read.* FROM unnest({arrays}) WITH ORDINALITY"  # noqa: S608
        f" AS qaa_reads({columns}, n) CROSS JOIN LATERAL ({inner}) AS qaa_read"
    )


#: asyncpg's positional placeholders, each with the cast SQLAlchemy renders after it.
_PLACEHOLDER = re.compile(r"\$(\d+)::")


def _means_dead(error: Exception) -> bool:
    if isinstance(error, OSError):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(DEAD_CONNECTION_SQLSTATES)
