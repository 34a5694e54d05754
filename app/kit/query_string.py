"""Reading an endpoint's query string: each parameter once, known by name, checked like every
string that crosses the boundary, and answered with a message that quotes only an excerpt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import parse_qsl

from app.kit.boundary import excerpt, value_problem

# The key may travel as ``key=`` (read by whoever authenticates the request, not here).
KEY_PARAMETER = "key"


class InvalidParameters(Exception):
    """A query string the endpoint cannot read, as its 422 answer's message."""


def parameters(
    query_string: str, allowed: Sequence[str], required: Sequence[str], *, max_length: int = 200
) -> dict[str, str]:
    """The parameters by name. An unknown name is refused rather than ignored: a misspelt
    filter would otherwise answer for more than was asked."""
    found: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name == KEY_PARAMETER:
            continue
        if name not in allowed:
            raise InvalidParameters(
                f"Unknown parameter {excerpt(name)!r}; this endpoint takes {', '.join(allowed)}."
            )
        if name in found:
            raise InvalidParameters(f"'{name}' is given more than once.")
        problem = value_problem(value, max_length=max_length)
        if problem is not None:
            raise InvalidParameters(f"'{name}' {problem}.")
        found[name] = value
    missing = [name for name in required if not found.get(name)]
    if missing:
        raise InvalidParameters(f"Missing {', '.join(repr(name) for name in missing)}.")
    return found


def moment(name: str, value: str) -> datetime:
    """As GraphQL's DateTime: ISO 8601, and a time without an offset is UTC."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidParameters(
            f"'{name}' is not an ISO 8601 date or time: {excerpt(value)!r}."
        ) from None
