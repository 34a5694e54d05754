"""GraphQL's side of the boundary: every string a request sends is checked before anything runs.

A string reaches a resolver as a literal in the document (an argument, a default value) or as a
variable. Both go through :func:`app.kit.boundary.value_problem` here, once per request and before
execution, so no resolver, service or database sees a NUL, a lone surrogate or a control
character, and a refused request changes nothing. Fields with stricter rules of their own (a
key's name) apply them on top, in their service.

This extension also settles the request's usage label: the name of the operation that actually
runs, known only once the document is parsed and validated.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode, GraphQLError, StringValueNode, Visitor, visit
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.kit.boundary import label, problems_in, value_problem

OPERATION_LABEL_MAX = 100
ANONYMOUS = "anonymous"
# Distinct documents whose literals were checked: the dashboard and scripts send a handful, each
# many times, so the walk over a document's strings happens about once per document.
_CHECKED_DOCUMENTS_MAX = 256
_checked: OrderedDict[str, GraphQLError | None] = OrderedDict()


class _StringLiterals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[StringValueNode] = []

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        self.found.append(node)


def _literal_error(document: DocumentNode) -> GraphQLError | None:
    literals = _StringLiterals()
    visit(document, literals)
    for node in literals.found:
        problem = value_problem(node.value)
        if problem is not None:
            return _refusal(f"A string in the query {problem}.", nodes=[node])
    return None


def _checked_literals(query: str | None, document: DocumentNode) -> GraphQLError | None:
    if query is None:
        return _literal_error(document)
    if query in _checked:
        _checked.move_to_end(query)
        return _checked[query]
    error = _checked[query] = _literal_error(document)
    if len(_checked) > _CHECKED_DOCUMENTS_MAX:
        _checked.popitem(last=False)
    return error


def _variable_errors(variables: dict[str, Any] | None) -> Iterator[GraphQLError]:
    for path, problem in problems_in(variables or {}):
        yield _refusal(f"Variable '${path}' {problem}.", argument=f"${path}")


def _refusal(message: str, *, nodes: Any = None, **extensions: str) -> GraphQLError:
    return GraphQLError(message, nodes=nodes, extensions={"code": "BAD_USER_INPUT", **extensions})


def operation_label(document: DocumentNode, operation_name: str | None) -> str:
    """The name of the operation that runs, cleaned for use as a usage label."""
    operation = get_operation_ast(document, operation_name)
    name = operation.name.value if operation is not None and operation.name else None
    return label(name or ANONYMOUS, OPERATION_LABEL_MAX)


class BoundaryCheck(SchemaExtension):
    """Refuses a request holding a string the boundary refuses (BAD_USER_INPUT, nothing runs),
    and tells the context which operation runs."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        assert document is not None, "execution starts after parsing"
        error = _checked_literals(context.query, document) or next(
            _variable_errors(context.variables), None
        )
        if error is not None:
            context.result = GraphQLExecutionResult(data=None, errors=[error])
        else:
            # The context is keyhouse's own (app.graphql.context.Context): it records the use,
            # and a query's unit of work has nothing to commit.
            context.context.operation = operation_label(document, context.operation_name)
            context.context.read_only = context.operation_type is OperationType.QUERY
        yield
