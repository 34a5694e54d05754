"""Every String and ID a GraphQL request can send, with hostile values: never a 500 or an
INTERNAL error, always a GraphQL JSON answer with short messages, and a refusal changes nothing.

The places a string goes are read from schema.graphql, so an argument added later is covered
without anyone remembering to add it here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    get_named_type,
    is_leaf_type,
)
from hypothesis import given

from app.config import Settings
from app.runtime import Runtime
from tests.fuzzing import (
    assert_messages_bounded,
    assert_metering_unharmed,
    fuzz_settings,
    hostile_text,
)
from tests.support import IssuedKey, Tenant, gql, make_key, snapshot

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"
SCHEMA: GraphQLSchema = build_schema(SCHEMA_FILE.read_text())
STRING_TYPES = frozenset({"String", "ID"})
# Where a string is (an argument, then input fields and list positions): ("input", "scopes", 0).
SlotPath = tuple[str | int, ...]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return fuzz_settings(database_url)


def _string_paths(type_: GraphQLInputType) -> Iterator[SlotPath]:
    """Every place a string can go in a value of ``type_``."""
    if isinstance(type_, GraphQLNonNull):
        yield from _string_paths(type_.of_type)
    elif isinstance(type_, GraphQLList):
        yield from ((0, *path) for path in _string_paths(type_.of_type))
    elif isinstance(type_, GraphQLInputObjectType):
        for name, field in type_.fields.items():
            yield from ((name, *path) for path in _string_paths(field.type))
    elif get_named_type(type_).name in STRING_TYPES:
        yield ()


# What a required value that is not under test holds: something valid, so the hostile string
# is what the request is judged on. Ids name no key, so no example revokes or rotates the key
# the test runs with.
_PLAIN_BY_NAME: dict[str, Any] = {
    "scopes": "read:charge_points",
    "id": "key_0000000000000000000000",
    "from": "2026-01-01T00:00:00Z",
    "to": "2026-01-01T01:00:00Z",
}
_PLAIN_BY_TYPE: dict[str, Any] = {"Int": 1, "Boolean": False, "String": "fuzz", "ID": "fuzz"}


def _plain(name: str, type_: GraphQLInputType, unique: str) -> Any:
    if isinstance(type_, GraphQLNonNull):
        return _plain(name, type_.of_type, unique)
    if isinstance(type_, GraphQLList):
        return [_plain(name, type_.of_type, unique)]
    if isinstance(type_, GraphQLInputObjectType):
        return {
            field_name: _plain(field_name, field.type, unique)
            for field_name, field in type_.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is None
        }
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if name == "name":
        return unique  # names are unique among live keys
    if name in _PLAIN_BY_NAME:
        return _PLAIN_BY_NAME[name]
    return _PLAIN_BY_TYPE[get_named_type(type_).name]


def _with_string(type_: GraphQLInputType, path: SlotPath, value: str, unique: str) -> Any:
    """A value of ``type_`` holding ``value`` at ``path``, everything else plain."""
    if isinstance(type_, GraphQLNonNull):
        return _with_string(type_.of_type, path, value, unique)
    if not path:
        return value
    if isinstance(type_, GraphQLList):
        return [_with_string(type_.of_type, path[1:], value, unique)]
    assert isinstance(type_, GraphQLInputObjectType)
    whole = _plain("", type_, unique)
    field_name = str(path[0])
    whole[field_name] = _with_string(type_.fields[field_name].type, path[1:], value, unique)
    return whole


def _selection(type_: GraphQLNamedType, depth: int = 2) -> str:
    """Every field of ``type_`` that needs no argument, nested ``depth`` levels: enough that
    each resolver a string could reach runs."""
    if is_leaf_type(type_):
        return ""
    assert isinstance(type_, GraphQLObjectType)
    fields = []
    for name, field in type_.fields.items():
        if any(isinstance(arg.type, GraphQLNonNull) for arg in field.args.values()):
            continue
        inner = get_named_type(field.type)
        if is_leaf_type(inner):
            fields.append(name)
        elif depth > 1:
            fields.append(f"{name} {_selection(inner, depth - 1)}")
    return "{ " + " ".join(fields or ["__typename"]) + " }"


@dataclass(frozen=True)
class StringSlot:
    """One place a request can put a string: an argument of a root field, or a place inside it."""

    operation_type: str
    field: str
    argument: str
    path: SlotPath
    document: str
    arguments: dict[str, GraphQLArgument]

    @property
    def id(self) -> str:
        inner = "".join(f".{part}" for part in self.path)
        return f"{self.field}.{self.argument}{inner}"

    def variables(self, value: str, unique: str) -> dict[str, Any]:
        """The argument under test holding ``value``; every other required argument plain."""
        found: dict[str, Any] = {}
        for name, argument in self.arguments.items():
            if name == self.argument:
                found[name] = _with_string(argument.type, self.path, value, unique)
            elif isinstance(argument.type, GraphQLNonNull) and argument.default_value is None:
                found[name] = _plain(name, argument.type, unique)
        return found


def string_slots(schema: GraphQLSchema) -> list[StringSlot]:
    slots: list[StringSlot] = []
    for operation_type, root in (("query", schema.query_type), ("mutation", schema.mutation_type)):
        assert root is not None
        for field_name, field in root.fields.items():
            for argument_name, argument in field.args.items():
                used = {
                    name: arg
                    for name, arg in field.args.items()
                    if name == argument_name
                    or (isinstance(arg.type, GraphQLNonNull) and arg.default_value is None)
                }
                declared = ", ".join(f"${name}: {arg.type}" for name, arg in used.items())
                passed = ", ".join(f"{name}: ${name}" for name in used)
                selection = _selection(get_named_type(field.type))
                document = (
                    f"{operation_type} Fuzz({declared}) {{ {field_name}({passed}) {selection} }}"
                )
                slots.extend(
                    StringSlot(operation_type, field_name, argument_name, path, document, used)
                    for path in _string_paths(argument.type)
                )
    return slots


SLOTS = string_slots(SCHEMA)


def test_the_fuzzed_strings_cover_every_string_argument_in_the_schema() -> None:
    assert {slot.id for slot in SLOTS} >= {
        "apiKeys.after",
        "apiKeys.filter.scope",
        "apiKey.id",
        "usage.apiKeyId",
        "usage.operation",
        "auditLog.after",
        "auditLog.filter.apiKeyId",
        "createApiKey.input.name",
        "createApiKey.input.scopes.0",
        "createApiKey.input.idempotencyKey",
        "rotateApiKey.input.id",
        "rotateApiKey.input.idempotencyKey",
        "revokeApiKey.id",
    }


_unique_names = (f"fuzz {n}" for n in itertools.count())


def _refused(body: dict[str, Any]) -> bool:
    if body.get("errors"):
        return True
    payloads = (body.get("data") or {}).values()
    return any(payload and payload.get("userErrors") for payload in payloads)


@pytest.mark.parametrize("slot", SLOTS, ids=lambda slot: slot.id)
@given(value=hostile_text)
async def test_a_hostile_string_argument_is_answered_never_with_a_500_and_a_refusal_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, slot: StringSlot, value: str
) -> None:
    before = await snapshot(runtime)

    result = await gql(
        client, slot.document, slot.variables(value, next(_unique_names)), key=tenant.admin_key
    )

    # 200 for an answer, 400 for a request refused before it ran (by graphql-response+json
    # rules or its own), 413 for a body past the limit (hundreds of KB, escaped).
    assert result.response.status_code in {200, 400, 413}, result.response.text[:500]
    assert "data" in result.body or "errors" in result.body
    assert "INTERNAL" not in result.error_codes, result.errors
    assert_messages_bounded(result.response, [value])
    if _refused(result.body) or slot.operation_type == "query":
        assert await snapshot(runtime) == before


@pytest.fixture
async def bystander_key(runtime: Runtime, other_tenant: Tenant) -> IssuedKey:
    return await make_key(runtime, other_tenant, "bystander", ["read:charge_points"])


@given(operation_name=hostile_text)
async def test_any_operation_name_is_answered_as_graphql_and_never_stops_metering(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    other_tenant: Tenant,
    bystander_key: IssuedKey,
    operation_name: str,
) -> None:
    result = await gql(
        client,
        "query Q { scopes { name } }",
        key=tenant.admin_key,
        operation_name=operation_name,
    )

    # 200 when it names the operation, 400 (no such operation) otherwise, 413 past the limit.
    assert result.response.status_code in {200, 400, 413}, result.response.text[:500]
    assert "data" in result.body or "errors" in result.body
    assert "INTERNAL" not in result.error_codes, result.errors
    assert_messages_bounded(result.response, [operation_name])
    await assert_metering_unharmed(client, runtime, bystander_key, other_tenant.organization_id)
