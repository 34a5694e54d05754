"""Who is calling: the organization and scopes a request acts with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    organization_id: str
    scopes: frozenset[str]
    # The key making the request; None for the operator's CLI.
    key_id: str | None = None
    key_hint: str | None = None
    # The calling key was rotated (or superseded) and works only until its grace period ends.
    being_replaced: bool = False

    def holds(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class Operator:
    """The platform that runs keyhouse, acting with one of its operator keys (the operator API).
    It acts on organizations from outside: it holds none of their scopes."""

    key_id: str
    key_hint: str
