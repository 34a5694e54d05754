"""The receiver of benchmarks/webhooks.py, in a process of its own: answers every POST with 204
and notes when each event arrived (the standard library, on uvloop unless told ``asyncio``).

    python benchmarks/webhook_receiver.py PORT LOG [uvloop|asyncio]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path


async def _receive(port: int, log: Path) -> None:
    out = log.open("a", buffering=1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                arrived = time.time()
                event = json.loads(body)
                key_id = event.get("data", {}).get("key", {}).get("id", "-")
                out.write(
                    f"{arrived:.6f} {key_id} {event.get('organizationId')} {event.get('id')}\n"
                )
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    loop = sys.argv[3] if len(sys.argv) > 3 else "uvloop"
    if loop == "uvloop":
        import uvloop

        uvloop.run(_receive(int(sys.argv[1]), Path(sys.argv[2])))
    else:
        asyncio.run(_receive(int(sys.argv[1]), Path(sys.argv[2])))
