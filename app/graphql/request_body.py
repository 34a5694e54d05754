"""A bound on how much of a request body the application reads.

A body is refused as soon as it is known to be too large: at once when its ``Content-Length``
says so, and otherwise (chunked uploads say nothing) once the bytes received pass the limit, so
the rest is never read, let alone parsed.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope


class BodyTooLarge(Exception):
    """The request body is over the limit: answer 413 without reading the rest."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


def declared_length(scope: Scope) -> int | None:
    """The body size the ``Content-Length`` header announces, if it announces one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def check_declared_length(scope: Scope, limit: int) -> None:
    declared = declared_length(scope)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)


def within(receive: Receive, limit: int) -> Receive:
    """``receive``, raising :class:`BodyTooLarge` once the body's chunks add up past ``limit``."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit
