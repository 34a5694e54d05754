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
    """Strawberry's executor, plus the leaf-field shortcut described above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Strawberry hands every request a middleware manager; it wraps resolvers only when a
        # schema extension has a ``resolve`` hook, and then every field must go through it.
        manager = self.middleware_manager
        self._shortcuts = manager is None or not manager.middlewares
        # Per request: the schema's field objects outlive it, so ids are stable meanwhile.
        self._leaf_fields: dict[int, LeafField | None] = {}

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Path,
        position_context: Any,
    ) -> Any:
        if self._shortcuts and len(field_details_list) == 1:
            field = self.schema.get_field(parent_type, field_details_list[0].node.name.value)
            if field is not None:
                if id(field) in self._leaf_fields:
                    shortcut = self._leaf_fields[id(field)]
                else:
                    shortcut = self._leaf_fields[id(field)] = leaf_field(field)
                if shortcut is not None:
                    value = _plain_leaf_value(shortcut, source)
                    if value is not Undefined:
                        return value
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )


def _plain_leaf_value(shortcut: LeafField, source: Any) -> Any:
    """The serialized value, or Undefined to send the field down graphql-core's general path."""
    try:
        value = shortcut.resolve(source, None)
        if value is None:
            return None if shortcut.nullable else Undefined
        if isinstance(value, Exception):
            return Undefined
        coerce = shortcut.leaf.coerce_output_value
        if not shortcut.is_list:
            return _checked(coerce(value))
        if not isinstance(value, list | tuple):
            return Undefined
        items = [coerce(item) for item in value]
    except Exception:
        # graphql-core runs the field again and reports the error with its path.
        return Undefined
    return Undefined if any(item is None or item is Undefined for item in items) else items


def _checked(coerced: Any) -> Any:
    return Undefined if coerced is None else coerced
