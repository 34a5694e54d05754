"""Expected failures: one base class carrying a machine-readable code.

GraphQL exposes ``code`` (and any extra fields) as ``extensions``; anything that is not an
``AppError`` is masked as INTERNAL before it reaches a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AppError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    @property
    def extensions(self) -> dict[str, Any]:
        # graphql-core copies an original error's ``extensions`` onto the GraphQL error.
        return {"code": self.code, **self.extra}


class BadUserInput(AppError):
    code = "BAD_USER_INPUT"


class Unavailable(AppError):
    """A dependency (the database) did not answer: the request may succeed if retried, so it is
    answered as an outage (HTTP 503 with ``Retry-After``), never as an internal error."""

    code = "UNAVAILABLE"
    # Long enough for a database failover or a restart to complete, short enough that a client
    # does not wait much longer than the outage (the nginx example's fallback says the same).
    retry_after_seconds = 5


class UserErrorCode:
    """Codes of expected mutation failures: the error table API providers publish for their
    keys, plus INVALID_INPUT."""

    INVALID_INPUT = "INVALID_INPUT"
    INVALID_SCOPE = "INVALID_SCOPE"
    NAME_TAKEN = "NAME_TAKEN"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    # A create that names something that exists already (an organization's externalId).
    ALREADY_EXISTS = "ALREADY_EXISTS"


@dataclass(frozen=True, slots=True)
class UserError:
    """An expected failure of a mutation, returned as data (``userErrors``), never raised."""

    code: str
    field: str | None
    message: str
