"""graphql-core's executor with a shortcut for plain leaf fields.

A page of 50 keys asks for about 500 fields, and nearly all of them are attributes read off an
object and turned into a scalar: ``name``, ``createdAt``, ``scopes``. graphql-core runs each
through the same general machinery as a field with a resolver, arguments and a sub-selection
(resolve info, argument coercion, nested value completion), which cost several microseconds a
field and, for the keys page, most of the request.

For a field Strawberry itself marks as basic (no resolver, no field extensions or permissions:
its resolver is ``getattr``) whose type is a scalar or enum, or a list of them, this executor
reads the attribute and serializes it in one step. Whenever the value is anything but the plain
case (null where null is not allowed, an exception, an awaitable, a value the scalar refuses),
it hands the field to graphql-core unchanged, which then reports it exactly as it always does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    is_leaf_type,
)
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


@dataclass(frozen=True, slots=True)
class LeafField:
    """How to answer one plain leaf field without graphql-core's general path."""

    resolve: Any
    leaf: GraphQLLeafType
    nullable: bool
    is_list: bool


def leaf_field(field: GraphQLField) -> LeafField | None:
    """The shortcut for this field, or None when it must take graphql-core's general path."""
    # Written against strawberry-graphql 0.341.2 (its private ``_is_default`` marks getattr).
    resolve = field.resolve
    if resolve is None or not getattr(resolve, "_is_default", False):
        return None  # a resolver of our own, field extensions or permissions
    field_type: Any = field.type
    nullable = not isinstance(field_type, GraphQLNonNull)
    if not nullable:
        field_type = field_type.of_type
    if is_leaf_type(field_type):
        return LeafField(resolve, field_type, nullable, is_list=False)
    # A list of non-null leaves ([String!]!, say); a list whose items may be null takes the
    # general path.
    if isinstance(field_type, GraphQLList) and isinstance(field_type.of_type, GraphQLNonNull):
        item = field_type.of_type.of_type
        if is_leaf_type(item):
            return LeafField(resolve, item, nullable, is_list=True)
    return None


class KeyhouseExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, plus the leaf-field shortcut described above: an object's plain
    leaf fields are answered in a loop, the others by graphql-core, and the answer keeps the
    selection's order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Strawberry hands every request a middleware manager; it wraps resolvers only when a
        # schema extension has a ``resolve`` hook, and then every field must go through it.
        manager = self.middleware_manager
        self._shortcuts = manager is None or not manager.middlewares
        # Per request: the schema's field objects outlive it, so ids are stable meanwhile.
        self._leaf_fields: dict[int, LeafField | None] = {}

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: dict[str, Any],
        position_context: Any,
    ) -> Any:
        # Written against strawberry-graphql 0.341.2 / graphql-core 3.3.2.
        if not self._shortcuts:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        plain: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for response_name, field_details_list in grouped_field_set.items():
            shortcut = self._leaf_field(parent_type, field_details_list)
            value = Undefined if shortcut is None else _plain_leaf_value(shortcut, source_value)
            if value is Undefined:
                rest[response_name] = field_details_list
            else:
                plain[response_name] = value
        if not rest:
            return plain
        others = super().execute_fields(parent_type, source_value, path, rest, position_context)

        def in_selection_order(values: dict[str, Any]) -> dict[str, Any]:
            # Fields graphql-core skipped (not in the schema) are absent from its answer.
            return {
                name: plain[name] if name in plain else values[name]
                for name in grouped_field_set
                if name in plain or name in values
            }

        if isinstance(others, dict):
            return in_selection_order(others)

        async def awaited() -> dict[str, Any]:
            return in_selection_order(await others)

        return awaited()

    def _leaf_field(
        self, parent_type: GraphQLObjectType, field_details_list: Any
    ) -> LeafField | None:
        if len(field_details_list) != 1:
            return None  # the same response name selected twice: merged by graphql-core
        field = self.schema.get_field(parent_type, field_details_list[0].node.name.value)
        if field is None:
            return None
        key = id(field)
        if key not in self._leaf_fields:
            self._leaf_fields[key] = leaf_field(field)
        return self._leaf_fields[key]


def _plain_leaf_value(shortcut: LeafField, source: Any) -> Any:
    """The serialized value, or Undefined to send the field down graphql-core's general path."""
    try:
        value = shortcut.resolve(source, None)
        if value is None:
            return None if shortcut.nullable else Undefined
        # An exception or an awaitable held by a plain field: graphql-core raises or awaits it.
        # (Checked, not left to the scalar: String would serialize an awaitable with str().)
        if isinstance(value, Exception) or hasattr(value, "__await__"):
            return Undefined
        coerce = shortcut.leaf.coerce_output_value
        if not shortcut.is_list:
            coerced = coerce(value)
            return Undefined if coerced is None else coerced
        if not isinstance(value, list | tuple):
            return Undefined
        items = [coerce(item) for item in value]
    except Exception:
        # graphql-core runs the field again and reports the error with its path.
        return Undefined
    return Undefined if any(item is None or item is Undefined for item in items) else items
