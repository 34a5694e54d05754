"""The static cost of a GraphQL operation: how much work it may ask for, known before it runs.

Every field the answer may hold costs 1, as many times as the answer may hold it: a field inside
a list costs 1 per item the list may have. A list's size comes from what bounds it:

- its own ``first`` argument (``byKey(first: 20)``);
- for a connection's ``edges`` and ``nodes``, the ``first`` of the field that returned the
  connection (``apiKeys(first: 50) { nodes { … } }``);
- a size the schema declares for a field that knows its own (a usage ``series`` has one point
  per step of its range);
- otherwise :attr:`CostModel.unsized_list`, for short lists the schema bounds by what exists
  (outcomes, scopes, the keys a creation supersedes).

Sizes past what the service would answer are counted at that bound (a page of at most 100), so
that a request asking for more is told what the field allows rather than what it would cost.
Aliases and fragments count like the fields they stand for: the cost follows graphql-core's own
collection of the selection (merged response names, ``@skip``/``@include``, type conditions), with
the request's variables. Introspection (``__schema``, ``__type``) is answered from the schema in
memory and counts 1.

Why not ``graphql-complexity``: its estimators read a list's size only from that field's own
literal argument (not a variable, not the parent connection's ``first``, not a range of dates),
its evaluation ignores the request's variables and sums every operation of the document rather
than the one that runs, and its Strawberry extension pins a Strawberry release far older than
ours.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
    is_object_type,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension

from app.kit.pagination import MAX_PAGE_SIZE

# How many items a list field may hold, from its arguments and those of the field above it.
ListSize = Callable[[Mapping[str, Any], Mapping[str, Any]], int]


@dataclass(frozen=True, slots=True)
class CostModel:
    maximum: int
    # Lists whose size no argument bounds: outcomes, scopes, superseded keys.
    unsized_list: int = 10
    # Lists that know their size: ``"Usage.series"`` -> its number of points.
    list_sizes: Mapping[str, ListSize] = field(default_factory=dict)


def operation_cost(
    model: CostModel,
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> int | None:
    """The cost of the operation that would run, or None when it cannot run as sent (no such
    operation, variables that do not coerce): execution then reports why, at no cost."""
    operation, fragments = _operation_and_fragments(document, operation_name)
    if operation is None:
        return None
    root = schema.get_root_type(operation.operation)
    if root is None:
        return None
    coerced = get_variable_values(
        schema, operation.variable_definitions or (), dict(variables or {}), max_errors=1
    )
    if isinstance(coerced, list):
        return None
    walk = _Walk(model, schema, fragments, coerced, operation)
    collected = collect_fields(schema, fragments, coerced, root, operation)
    return walk.cost(collected.grouped_field_set, root, {})


def _operation_and_fragments(
    document: DocumentNode, operation_name: str | None
) -> tuple[OperationDefinitionNode | None, dict[str, FragmentDetails]]:
    operations = []
    fragments: dict[str, FragmentDetails] = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            if operation_name is None or (
                definition.name is not None and definition.name.value == operation_name
            ):
                operations.append(definition)
        elif isinstance(definition, FragmentDefinitionNode):
            fragments[definition.name.value] = FragmentDetails(definition)
    return (operations[0] if len(operations) == 1 else None), fragments


@dataclass(slots=True)
class _Walk:
    model: CostModel
    schema: GraphQLSchema
    fragments: dict[str, FragmentDetails]
    variables: VariableValues
    operation: OperationDefinitionNode

    def cost(
        self,
        grouped: Mapping[str, list[FieldDetails]],
        parent: GraphQLObjectType,
        parent_args: Mapping[str, Any],
    ) -> int:
        """What one object of type ``parent`` costs with this selection."""
        total = 0
        for details in grouped.values():
            total += 1
            name = details[0].node.name.value
            definition = parent.fields.get(name)
            if definition is None or name.startswith("__"):
                continue  # __typename, and introspection answered from memory
            item_type = get_named_type(definition.type)
            if not is_object_type(item_type) or details[0].node.selection_set is None:
                continue  # a scalar, an enum, or a list of them: answered in one step
            args = self._arguments(definition, details[0])
            size = 1
            if is_list_type(get_nullable_type(definition.type)):
                size = self._list_size(f"{parent.name}.{name}", args, parent_args)
            if size == 0:
                continue
            assert isinstance(item_type, GraphQLObjectType)
            collected = collect_subfields(
                self.schema, self.fragments, self.variables, self.operation, item_type, details
            )
            total += size * self.cost(collected.grouped_field_set, item_type, args)
        return total

    def _arguments(self, definition: Any, details: FieldDetails) -> dict[str, Any]:
        try:
            return get_argument_values(
                definition, details.node, self.variables, details.fragment_variable_values
            )
        except GraphQLError:
            return {}  # execution reports it, on this field

    def _list_size(
        self, coordinate: str, args: Mapping[str, Any], parent_args: Mapping[str, Any]
    ) -> int:
        declared = self.model.list_sizes.get(coordinate)
        if declared is not None:
            return max(0, declared(args, parent_args))
        first = args.get("first", parent_args.get("first"))
        if isinstance(first, int):
            return min(max(first, 0), MAX_PAGE_SIZE)
        return self.model.unsized_list


class CostCache:
    """The costs of recently asked operations, by their text and variables: a dashboard sends the
    same few documents with the same few variables over and over. Longer requests are costed
    each time rather than kept (their parsing costs more than the estimate anyway)."""

    MAX_KEY_LENGTH = 16 * 1024

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._costs: OrderedDict[tuple[str, str | None, bytes], int | None] = OrderedDict()

    def cost(
        self,
        query: str,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        estimate: Callable[[], int | None],
    ) -> int | None:
        try:
            frozen = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return estimate()  # text UTF-8 cannot carry: costed, not kept
        if len(query) + len(frozen) > self.MAX_KEY_LENGTH:
            return estimate()
        key = (query, operation_name, frozen)
        if key in self._costs:
            self._costs.move_to_end(key)
            return self._costs[key]
        cost = self._costs[key] = estimate()
        if len(self._costs) > self.maxsize:
            self._costs.popitem(last=False)
        return cost


class QueryCost(SchemaExtension):
    """Refuses, before it runs, an operation that costs more than the maximum, and reports the
    cost of every operation in the answer's ``extensions.cost`` (Shopify's Admin API does the
    same): ``requestedQueryCost`` is null when the request never got that far (a syntax,
    validation or variable error)."""

    def __init__(self, *, model: CostModel, cache: CostCache) -> None:
        self.model = model
        self.cache = cache
        self.requested: int | None = None

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        assert document is not None  # validated by now

        def estimate() -> int | None:
            schema = context.schema._schema
            return operation_cost(
                self.model, schema, document, context.operation_name, context.variables
            )

        if context.query is None:
            self.requested = estimate()
        else:
            self.requested = self.cache.cost(
                context.query, context.operation_name, context.variables, estimate
            )
        if self.requested is not None and self.requested > self.model.maximum:
            # A result set before execution replaces it: nothing runs.
            context.result = GraphQLExecutionResult(data=None, errors=[self._too_costly()])
        yield

    def _too_costly(self) -> GraphQLError:
        message = (
            f"This operation costs {self.requested:,}, more than the maximum of "
            f"{self.model.maximum:,}: ask for fewer items (smaller pages, shorter or coarser "
            "series, fewer aliases)."
        )
        extensions = {
            "code": "BAD_USER_INPUT",
            "cost": self.requested,
            "maximumCost": self.model.maximum,
        }
        return GraphQLError(message, extensions=extensions)

    def get_results(self) -> dict[str, Any]:
        return {"cost": {"requestedQueryCost": self.requested, "maximumCost": self.model.maximum}}
