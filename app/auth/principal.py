"""Who is calling: the organization and scopes a request acts with."""

from __future__ import annotations

from dataclasses import dataclass

from app.keys.cache import KeyRecord


@dataclass(frozen=True, slots=True)
class Caller:
    organization_id: str
    scopes: frozenset[str]
    # The key making the request; None for the operator's CLI.
    key_id: str | None = None
    key_hint: str | None = None
    # The calling key was rotated (or superseded) and works only until its grace period ends.
    being_replaced: bool = False

    @classmethod
    def from_key(cls, record: KeyRecord) -> Caller:
        return cls(
            record.organization_id,
            record.scopes,
            record.id,
            record.hint,
            being_replaced=record.superseded_at is not None,
        )

    def holds(self, scope: str) -> bool:
        return scope in self.scopes
