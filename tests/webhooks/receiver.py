"""A real HTTP receiver for webhook tests: listens on 127.0.0.1, keeps every request it gets,
answers with the status the test sets, and can go down and come back up on the same port."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def verified_with(self, secret: str) -> dict[str, Any]:
        """The event, once its signature checked out with the receiver's library."""
        verified: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return verified


@dataclass
class Receiver:
    port: int = 0
    status: int = 200
    # While cleared, requests are read and kept but not answered (an attempt in flight).
    answering: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _connections: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def __post_init__(self) -> None:
        self.answering.set()

    def hold(self) -> None:
        self.answering.clear()

    def release(self) -> None:
        self.answering.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Down means down: open connections are cut too (keep-alive would outlive it).
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        return [request.event for request in self.received]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(path, headers, body))
                self.arrived.set()
                await self.answering.wait()
                answer = b"ok"
                writer.write(
                    f"HTTP/1.1 {self.status} X\r\ncontent-length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
