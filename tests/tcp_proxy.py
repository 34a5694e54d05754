"""A TCP forwarder that a test puts in front of PostgreSQL or Redis, to cut it and heal it.

The shared servers are never stopped or reconfigured: a test points keyhouse at the proxy and
simulates an outage there. Cutting aborts every open connection (as a dead network link does)
and closes every new one at once; healing forwards again. The proxy runs its own event loop in
a thread, so that it keeps forwarding while a test blocks (subprocess instances, sync tests)
and while the test's own loop is busy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

CHUNK_BYTES = 64 * 1024


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._cut = False
        self.port = 0

    # --- what a test calls (from any thread) ----------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        """Every open connection is aborted; new ones are closed as soon as they arrive."""
        self._call(self._cut_all())

    def heal(self) -> None:
        self._call(self._heal())

    def close(self) -> None:
        self._call(self._shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    @property
    def open_connections(self) -> int:
        return len(self._open) // 2

    # --- inside the proxy's loop ----------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut_all(self) -> None:
        self._cut = True
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _heal(self) -> None:
        self._cut = False

    async def _shut(self) -> None:
        await self._cut_all()
        if self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, upstream_writer)
        self._open.update(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        finally:
            for end in pair:
                self._open.discard(end)
                end.transport.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with suppress(OSError):
            while chunk := await source.read(CHUNK_BYTES):
                if self._cut:
                    return
                sink.write(chunk)
                await sink.drain()
        # One side finished: end the other as well, as a closed socket would.
        sink.transport.abort()


@contextmanager
def tcp_proxy(url: str) -> Iterator[TcpProxy]:
    """A proxy in front of the server of ``url`` (``postgresql+asyncpg://…``, ``redis://…``)."""
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
