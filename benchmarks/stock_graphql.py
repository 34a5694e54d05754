"""The baseline of benchmarks/graphql_keys.py: a stock Strawberry app, no extensions, no caches."""

from __future__ import annotations

import strawberry
from strawberry.asgi import GraphQL


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


schema = strawberry.Schema(query=Query)
app: GraphQL[None, None] = GraphQL(schema)
