"""Log lines: text for a terminal, or one JSON object per line for a log pipeline
(``KEYHOUSE_LOG_FORMAT=json``), each naming the request it belongs to and, once known, the
organization.

What keyhouse logs never holds a secret or a GraphQL request's variables (the modules that log
say so where it matters); this module adds only the request's id and the organization's.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from app.config import LogFormat

# The id of the request being answered: the gateway's own (`X-Request-Id`, e.g. nginx's
# $request_id) when it sent one, else this process's prefix and a counter (cheaper than a random
# id per request; unique enough to find a request's lines among a deployment's logs).
REQUEST_ID: ContextVar[str | None] = ContextVar("keyhouse_request_id", default=None)
ORGANIZATION_ID: ContextVar[str | None] = ContextVar("keyhouse_organization_id", default=None)

# A gateway's id is taken as it is only when it cannot carry anything else: letters, digits and
# dashes (a UUID, nginx's hex). A key has an underscore, so a key sent there is never logged.
_GATEWAY_REQUEST_ID = re.compile(rb"[A-Za-z0-9-]{1,64}")
_PROCESS_PREFIX = os.urandom(4).hex()
_numbers = itertools.count(1)


def request_id_for(headers: list[tuple[bytes, bytes]]) -> str:
    """The id of a request with these (ASGI) headers."""
    for name, value in headers:
        if name == b"x-request-id" and _GATEWAY_REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return f"{_PROCESS_PREFIX}-{next(_numbers):x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request's ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["requestId"] = request_id
        organization_id = ORGANIZATION_ID.get()
        if organization_id is not None:
            entry["organizationId"] = organization_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message``, with ``[request id]`` when the line belongs to one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = REQUEST_ID.get()
        return line if request_id is None else f"{line} [request {request_id}]"


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for a keyhouse process (the server, and each worker of
    ``--workers``, which configures its own logging from it)."""
    formatter = JsonFormatter if log_format is LogFormat.JSON else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"keyhouse": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "keyhouse",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # uvicorn's own loggers reach the root handler, in the same format; its access log stays
        # off (a URL may carry `?key=`).
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
