"""GraphQL types every feature shares: paging (a generic connection), mutation userErrors, the
usage figures a key and a report both show, and the enums of stored values they use."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

import strawberry
from strawberry.types.nodes import SelectedField, Selection

from app.kit.errors import UserError
from app.kit.pagination import COUNT_LIMIT
from app.models.usage import Counts, Granularity

logger = logging.getLogger(__name__)


class Position(Protocol):
    """A place in a list, as its opaque cursor (``Cursor``, or a list's own kind)."""

    def encode(self) -> str: ...


Node = TypeVar("Node")
Row = TypeVar("Row")

# The stored enum itself is the GraphQL enum: resolvers take and return Granularity.
strawberry.enum(Granularity, name="Granularity")


TOTAL_COUNT_DESCRIPTION = (
    f"How many match, counted up to {COUNT_LIMIT:,}: {COUNT_LIMIT:,} means {COUNT_LIMIT:,} or "
    f'more (show "{COUNT_LIMIT:,}+"). Counted only when selected.'
)


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[Node]):
    cursor: str
    node: Node


@strawberry.type
class Connection(Generic[Node]):
    """A page of things, newest first, with the cursor of each (Relay's connection)."""

    page_info: PageInfo
    edges: list[Edge[Node]]
    # Counting is a statement of its own, run only when totalCount is selected: most pages
    # (the next page, a picker) never show it.
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description=TOTAL_COUNT_DESCRIPTION)
    async def total_count(self) -> int:
        return await self.count()

    @strawberry.field
    def nodes(self) -> list[Node]:
        return [edge.node for edge in self.edges]

    @classmethod
    def of(
        cls,
        rows: Sequence[Row],
        node: Callable[[Row], Node],
        cursor: Callable[[Row], Position],
        *,
        count: Callable[[], Awaitable[int]],
        has_next_page: bool,
        after: Position | None,
    ) -> Connection[Node]:
        edges = [Edge(cursor=cursor(row).encode(), node=node(row)) for row in rows]
        return cls(
            count=count,
            page_info=PageInfo(
                has_next_page=has_next_page,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
            edges=edges,
        )


def selects(info: strawberry.Info[Any, Any], field: str) -> bool:
    """Whether the query asks for ``field`` right under the resolver's field (under any alias,
    in any fragment): what a resolver may skip computing when nobody reads it."""
    pending: list[Selection] = list(info.selected_fields)
    while pending:
        for child in pending.pop().selections:
            if isinstance(child, SelectedField):
                if child.name == field:
                    return True
            else:  # a fragment: its fields are the field's own
                pending.append(child)
    return False


@strawberry.enum
class UserErrorCode(Enum):
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_SCOPE = "INVALID_SCOPE"
    NAME_TAKEN = "NAME_TAKEN"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    ALREADY_EXISTS = "ALREADY_EXISTS"


@strawberry.type(name="UserError", description="An expected failure of a mutation.")
class UserErrorType:
    code: UserErrorCode
    field: str | None = strawberry.field(description="The input field at fault, if any.")
    message: str

    @classmethod
    def of(cls, error: UserError) -> UserErrorType:
        return cls(code=UserErrorCode(error.code), field=error.field, message=error.message)


def user_errors(mutation: str, errors: list[UserError]) -> list[UserErrorType]:
    """The payload's userErrors, each logged as one line (expected: no traceback)."""
    for error in errors:
        logger.info("graphql userError %s on %s.%s", error.code, mutation, error.field or "-")
    return [UserErrorType.of(error) for error in errors]


@strawberry.type(description="Uses counted: all of them, the valid ones, the rejected ones.")
class UsageCounts:
    requests: int
    valid: int
    rejected: int

    @classmethod
    def of(cls, counts: Counts) -> UsageCounts:
        return cls(requests=counts.requests, valid=counts.valid, rejected=counts.rejected)
