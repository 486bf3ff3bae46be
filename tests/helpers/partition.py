"""A network partition between the service and PostgreSQL, made on this machine.

`Partition` is a TCP proxy on 127.0.0.1 in a thread of its own. While it flows it
forwards every byte both ways; `cut()` stops forwarding without closing anything
(connections stay open, bytes wait, new connections are accepted and held), which is
what a partition looks like from the service: no error, no answer. `heal()` lets the
held bytes through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CHUNK = 65536


class Partition:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="partition", daemon=True)

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._event().clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._event().set)

    def _event(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        await self._event().wait()  # held while cut: the client waits, nothing answers
        server_r, server_w = await asyncio.open_connection(*self.target)
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w)),
            asyncio.create_task(self._pump(server_r, client_w)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(CHUNK):
                await self._event().wait()
                writer.write(data)
                await writer.drain()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the partition proxy did not start"

    def stop(self) -> None:
        self.heal()
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextmanager
def partition_proxy(host: str, port: int) -> Iterator[Partition]:
    """A flowing proxy to host:port, stopped (and its thread joined) on leaving."""
    proxy = Partition(host, port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
