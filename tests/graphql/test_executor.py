"""The executor's leaf-field shortcut answers exactly what graphql-core's general path answers:
the same data, and the same errors at the same paths, for plain values and every odd one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import pytest
import strawberry
from graphql import ExecutionResult, execute, parse
from graphql.pyutils import Undefined
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

import app.graphql.executor
from app.graphql.executor import KeyhouseExecutor

MOMENT = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


@strawberry.enum
class Colour(Enum):
    RED = "RED"
    BLUE = "BLUE"


@strawberry.type
class Thing:
    id: strawberry.ID
    name: str
    nickname: str | None
    count: int
    colour: Colour
    at: datetime
    tags: list[str]
    maybe_tags: list[str] | None
    loose_tags: list[str | None]

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()

    @strawberry.field
    async def later(self) -> str:
        return self.name


def thing(**changes: Any) -> Thing:
    values: dict[str, Any] = {
        "id": strawberry.ID("t1"),
        "name": "one",
        "nickname": None,
        "count": 3,
        "colour": Colour.RED,
        "at": MOMENT,
        "tags": ["a", "b"],
        "maybe_tags": None,
        "loose_tags": ["x", None],
    }
    values.update(changes)
    return Thing(**values)


THINGS: list[Thing] = []


@strawberry.type
class Query:
    @strawberry.field
    def things(self) -> list[Thing]:
        return THINGS


SCHEMA = strawberry.Schema(query=Query)
ALL_FIELDS = "{ things { id name nickname count colour at tags maybeTags looseTags shout } }"


def both(query: str, things: list[Thing]) -> tuple[ExecutionResult, ExecutionResult]:
    THINGS[:] = things
    document = parse(query)
    general = execute(
        SCHEMA._schema, document, executor_class=StrawberryGraphQLCoreExecutionContext
    )
    shortcut = execute(SCHEMA._schema, document, executor_class=KeyhouseExecutor)
    assert isinstance(general, ExecutionResult)
    assert isinstance(shortcut, ExecutionResult)
    return general, shortcut


def _errors(result: ExecutionResult) -> list[tuple[str, list[str | int] | None]]:
    return [(error.message, error.path) for error in result.errors or ()]


@pytest.fixture
def shortcut_uses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The fields the shortcut answered (rather than handing them to graphql-core)."""
    answered: list[str] = []
    real = app.graphql.executor._plain_leaf_value

    def spy(shortcut: app.graphql.executor.LeafField, source: Any) -> Any:
        value = real(shortcut, source)
        if value is not Undefined:
            answered.append(shortcut.leaf.name)
        return value

    monkeypatch.setattr(app.graphql.executor, "_plain_leaf_value", spy)
    return answered


def test_plain_values_come_out_the_same_and_the_shortcut_answers_them(
    shortcut_uses: list[str],
) -> None:
    general, shortcut = both(ALL_FIELDS, [thing(), thing(nickname="uno", maybe_tags=["c"])])

    assert shortcut.errors is None
    assert shortcut.data == general.data
    assert shortcut.data is not None
    assert shortcut.data["things"][0]["at"] == MOMENT.isoformat()
    assert shortcut.data["things"][0]["colour"] == "RED"
    # The eight plain leaves of both things, nulls included; looseTags (items may be null) and
    # shout (a resolver) take the general path.
    assert sorted(set(shortcut_uses)) == ["Colour", "DateTime", "ID", "Int", "String"]
    assert len(shortcut_uses) == 2 * 8


@pytest.mark.parametrize(
    "changes",
    [
        {"name": None},  # null for a non-null field
        {"count": "many"},  # a value Int refuses
        {"count": 2**40},  # out of Int's range
        {"colour": "GREEN"},  # not a member of the enum
        {"at": "yesterday"},  # DateTime cannot serialize a string
        {"tags": ["a", None]},  # a null item in a list of non-null items
        {"tags": "a b"},  # not a list
        {"tags": [1, object()]},  # an item String refuses
        {"name": ValueError("broken")},  # an exception as the value
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_odd_values_give_the_same_errors_at_the_same_paths(changes: dict[str, Any]) -> None:
    general, shortcut = both(ALL_FIELDS, [thing(), thing(**changes)])

    assert general.errors, "the case must be an error for graphql-core too"
    assert _errors(shortcut) == _errors(general)
    assert shortcut.data == general.data


def _key_orders(data: Any) -> Any:
    """The data with every object's keys listed in order (dict equality ignores order)."""
    if isinstance(data, dict):
        return [(key, _key_orders(value)) for key, value in data.items()]
    if isinstance(data, list):
        return [_key_orders(item) for item in data]
    return data


def test_the_answer_keeps_the_selections_order_with_aliases_and_resolvers_in_between() -> None:
    query = "{ things { shout alias: name count name tags again: count shout2: shout id } }"

    general, shortcut = both(query, [thing(), thing(name="two")])

    assert shortcut.errors is None
    assert _key_orders(shortcut.data) == _key_orders(general.data)


async def _awaited(result: Awaitable[ExecutionResult] | ExecutionResult) -> ExecutionResult:
    assert not isinstance(result, ExecutionResult), "an async resolver makes execution async"
    return await result


async def test_an_async_resolver_among_plain_leaves_is_awaited_in_place() -> None:
    THINGS[:] = [thing(), thing(name="two")]
    document = parse("{ things { id later name } }")

    general = await _awaited(
        execute(SCHEMA._schema, document, executor_class=StrawberryGraphQLCoreExecutionContext)
    )
    shortcut = await _awaited(execute(SCHEMA._schema, document, executor_class=KeyhouseExecutor))

    assert shortcut.errors is None
    assert _key_orders(shortcut.data) == _key_orders(general.data)
    assert shortcut.data == {
        "things": [
            {"id": "t1", "later": "one", "name": "one"},
            {"id": "t1", "later": "two", "name": "two"},
        ]
    }


class Later:
    """An awaitable a plain field may hold (graphql-core awaits a field's awaitable value)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, str]:
        yield from asyncio.sleep(0).__await__()
        return self.value


async def test_an_awaitable_held_by_a_plain_field_is_awaited_not_serialized() -> None:
    THINGS[:] = [thing(name=Later("awaited"))]
    document = parse("{ things { id name } }")

    general = await _awaited(
        execute(SCHEMA._schema, document, executor_class=StrawberryGraphQLCoreExecutionContext)
    )
    shortcut = await _awaited(execute(SCHEMA._schema, document, executor_class=KeyhouseExecutor))

    assert general.errors is None
    assert shortcut.errors is None
    assert shortcut.data == general.data == {"things": [{"id": "t1", "name": "awaited"}]}


class Uppercase(SchemaExtension):
    """A schema extension with a resolve hook: it must see every field."""

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        value = _next(root, info, *args, **kwargs)
        return value.upper() if isinstance(value, str) else value


def test_a_schema_extension_with_a_resolve_hook_sees_every_field(
    shortcut_uses: list[str],
) -> None:
    schema = strawberry.Schema(
        query=Query, extensions=[Uppercase], execution_context_class=KeyhouseExecutor
    )
    THINGS[:] = [thing()]

    result = schema.execute_sync("{ things { name tags } }")

    assert result.errors is None
    assert result.data == {"things": [{"name": "ONE", "tags": ["a", "b"]}]}
    assert shortcut_uses == []
