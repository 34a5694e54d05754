"""The GraphQL schema: every feature's queries and mutations merged once, with the abuse limits
(depth, tokens, aliases, the boundary, cost) and the error policy (what is masked, what logged).

This module and the HTTP view (app/graphql/view.py) are where the features meet; the rest of
app/graphql is the shared layer the features build on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from app.audit.graphql import Query as AuditQuery
from app.config import Settings
from app.graphql.cost import CostCache, CostModel, QueryCost
from app.graphql.executor import KeyhouseExecutor
from app.graphql.inputs import BoundaryCheck
from app.keys.graphql import Mutation as KeysMutation
from app.keys.graphql import Query as KeysQuery
from app.kit.errors import AppError, Unavailable
from app.operators.graphql import Mutation as OperatorMutation
from app.operators.graphql import Query as OperatorQuery
from app.organizations.graphql import Mutation as OrganizationsMutation
from app.organizations.graphql import Query as OrganizationsQuery
from app.organizations.operator_graphql import Mutation as OperatorOrganizationsMutation
from app.organizations.operator_graphql import Query as OperatorOrganizationsQuery
from app.usage.graphql import LIST_SIZES as USAGE_LIST_SIZES
from app.usage.graphql import Query as UsageQuery
from app.webhooks.graphql import Mutation as WebhooksMutation
from app.webhooks.graphql import Query as WebhooksQuery

logger = logging.getLogger("app.graphql")


Query = merge_types(
    "Query",
    (
        OrganizationsQuery,
        KeysQuery,
        UsageQuery,
        AuditQuery,
        WebhooksQuery,
        OperatorOrganizationsQuery,
        OperatorQuery,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        KeysMutation,
        OrganizationsMutation,
        WebhooksMutation,
        OperatorOrganizationsMutation,
        OperatorMutation,
    ),
)


def error_code(error: GraphQLError) -> str | None:
    code = (error.extensions or {}).get("code")
    return code if isinstance(code, str) else None


# Codes of errors after which the request's unit of work is rolled back rather than committed.
UNDONE_CODES = frozenset({"INTERNAL", Unavailable.code})


def _is_expected(error: GraphQLError) -> bool:
    """Errors the client may see as they are: ours (with a code) and GraphQL's own
    (syntax, validation, limits), which carry no original exception."""
    original = error.original_error
    return original is None or isinstance(original, (AppError, GraphQLError))


class MaskUnexpectedErrors(MaskErrors):
    """Hides everything but expected errors, and labels what it hides as INTERNAL."""

    def __init__(self) -> None:
        super().__init__(
            should_mask_error=lambda error: not _is_expected(error),
            error_message="Internal server error.",
        )

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL"}
        return masked


_VARIABLE_ERROR = re.compile(r"Variable '\$\w+'")


def _loggable(error: GraphQLError) -> str:
    """What an expected error's log line says: never a value the request sent. Our messages
    quote the input (a page size, a scope name), so ours are logged by their extensions
    (``argument``, ``requiredScope``); graphql-core's messages come from the document, except
    variable coercion errors, which quote the variable's value."""
    if error.original_error is not None:
        extensions = error.extensions or {}
        return " ".join(f"{k}={v}" for k, v in extensions.items() if k != "code") or "-"
    variable = _VARIABLE_ERROR.match(error.message)
    if variable is not None:
        return f"{variable.group(0)} has an invalid value."
    return error.message


class KeyhouseSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors are one line each, without a traceback; request variables are never
        # logged (they may hold names and ids a customer considers private).
        for error in errors:
            path = ".".join(str(p) for p in error.path or ()) or "-"
            if isinstance(error.original_error, Unavailable):
                logger.warning(
                    "graphql error UNAVAILABLE at %s: %r", path, error.original_error.__cause__
                )
            elif _is_expected(error):
                code = error_code(error) or "BAD_USER_INPUT"
                logger.info("graphql error %s at %s: %s", code, path, _loggable(error))
            else:
                logger.error("graphql internal error at %s", path, exc_info=error.original_error)


def build_schema(settings: Settings) -> KeyhouseSchema:
    # Factories, not instances: Strawberry builds fresh extensions for every request, since an
    # extension keeps that request's execution context. The parser and validation caches live at
    # module level, so they survive that. The limits' validation rules are classes made once
    # here: ValidationCache keys on the rule classes, and a depth or alias limiter built per
    # request would bring classes of its own and miss the cache every time.
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]
    cost_model = CostModel(maximum=settings.graphql_max_cost, list_sizes=USAGE_LIST_SIZES)
    costs = CostCache()
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: AddValidationRules(limit_rules),
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
        BoundaryCheck,
        lambda: QueryCost(model=cost_model, cache=costs),
        MaskUnexpectedErrors,
    ]
    return KeyhouseSchema(
        query=Query,
        mutation=Mutation,
        extensions=extensions,
        config=StrawberryConfig(auto_camel_case=True),
        execution_context_class=KeyhouseExecutor,
    )
