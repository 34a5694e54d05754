"""The scope catalogue: the deployment's product scopes plus the ones guarding keyhouse itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

READ_API_KEYS = "read:api_keys"
WRITE_API_KEYS = "write:api_keys"
READ_ANALYTICS = "read:analytics"

KEYHOUSE_SCOPES: dict[str, str] = {
    READ_API_KEYS: "List and read the organization's API keys",
    WRITE_API_KEYS: "Create, rotate and revoke the organization's API keys and its key policy",
    READ_ANALYTICS: "Access usage analytics and reports",
}


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    description: str


class ScopeCatalogue:
    def __init__(self, product_scopes: Mapping[str, str]) -> None:
        merged = {**product_scopes, **KEYHOUSE_SCOPES}
        self._scopes = {name: Scope(name, merged[name]) for name in sorted(merged)}

    def __contains__(self, name: object) -> bool:
        return name in self._scopes

    def all(self) -> list[Scope]:
        return list(self._scopes.values())

    def names(self) -> frozenset[str]:
        return frozenset(self._scopes)

    def unknown(self, names: Iterable[str]) -> list[str]:
        return sorted({name for name in names if name not in self._scopes})
