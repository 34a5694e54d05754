"""The baselines of benchmarks/graphql_keys.py: Strawberry apps with nothing of keyhouse's.

``app`` answers ``{ __typename }``: the issue's baseline, stock (no extensions, no caches).

``keys_page_app`` answers the same keys-page query as keyhouse, with the same field names and
types, from 1,000 keys held in memory: no database, no authentication, no limits, and
Strawberry's parser and validation caches on, so a repeated query is neither parsed nor
validated again. Its throughput is what Strawberry's own execution does with that page, before
any database or authentication work.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from enum import Enum

import strawberry
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

KEYS = 1000


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


schema = strawberry.Schema(query=Query)
app: GraphQL[None, None] = GraphQL(schema)


@strawberry.enum
class ApiKeyStatus(Enum):
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"


@strawberry.type
class ApiKey:
    id: strawberry.ID
    name: str
    hint: str
    scopes: list[str]
    status: ApiKeyStatus
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


@strawberry.type
class ApiKeyEdge:
    cursor: str
    node: ApiKey


@strawberry.type
class ApiKeyConnection:
    total_count: int
    edges: list[ApiKeyEdge]


def _keys(count: int) -> list[tuple[str, ApiKey]]:
    """(cursor, key), newest first, shaped like benchmarks/graphql_keys.py's seed."""
    now = datetime.now(UTC)
    keys = []
    for number in range(count):
        key_id = f"k_{number:030d}"
        created_at = now - timedelta(seconds=number)
        cursor = base64.urlsafe_b64encode(f"{created_at.isoformat()}|{key_id}".encode()).decode()
        key = ApiKey(
            id=strawberry.ID(key_id),
            name=f"bench key {number:04d}",
            hint="kh_3fA9…x7Qk",
            scopes=["read:charge_points", "read:sessions"],
            status=ApiKeyStatus.ACTIVE if number % 4 else ApiKeyStatus.EXPIRED,
            created_at=created_at,
            last_used_at=now - timedelta(minutes=number) if number % 2 == 0 else None,
            # As the status says: every fourth key expired yesterday.
            expires_at=now - timedelta(days=1) if number % 4 == 0 else None,
        )
        keys.append((cursor, key))
    return keys


_KEYS = _keys(KEYS)


@strawberry.type
class KeysQuery:
    @strawberry.field
    def api_keys(self, first: int = 20) -> ApiKeyConnection:
        return ApiKeyConnection(
            total_count=len(_KEYS),
            edges=[ApiKeyEdge(cursor=cursor, node=key) for cursor, key in _KEYS[:first]],
        )


keys_page_schema = strawberry.Schema(query=KeysQuery, extensions=[ParserCache, ValidationCache])
keys_page_app: GraphQL[None, None] = GraphQL(keys_page_schema)
