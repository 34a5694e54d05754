"""Scope checks for GraphQL fields, as Strawberry permission extensions.

``permission_classes`` cannot take arguments, so each field gets a ``PermissionExtension``
holding a ``RequireScope`` instance; its error carries ``extensions.requiredScope``.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension

from app.graphql.context import OPERATOR_ON_ORGANIZATION_FIELD, Info

# What an organization's key is told it lacks on an operator field: no key of an organization
# can hold it; only operator keys (``keyhouse operator-keys``) pass.
OPERATOR = "operator"


class RequireScope(BasePermission):
    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.message = f"This operation needs the '{scope}' scope, which your key does not hold."
        self.error_extensions = {"code": "FORBIDDEN", "requiredScope": scope}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.caller.holds(self.scope)


def needs(scope: str) -> list[FieldExtension]:
    """``@strawberry.field(extensions=needs(READ_API_KEYS))``."""
    return [PermissionExtension(permissions=[RequireScope(scope)], use_directives=False)]


class RequireOperator(BasePermission):
    message = (
        "This field is for the platform's operator: it needs an operator key (kho_…), made "
        "with `keyhouse operator-keys create` on the server."
    )

    def __init__(self) -> None:
        self.error_extensions = {"code": "FORBIDDEN", "requiredScope": OPERATOR}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.operator is not None


class RequireOrganizationKey(BasePermission):
    """For the few organization fields that read nothing of the caller's organization (the
    scope catalogue): an operator key gets them no more than any other organization field."""

    message = OPERATOR_ON_ORGANIZATION_FIELD

    def __init__(self) -> None:
        self.error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.operator is None


def needs_operator() -> list[FieldExtension]:
    """``@strawberry.field(extensions=needs_operator())``: operator keys only."""
    return [PermissionExtension(permissions=[RequireOperator()], use_directives=False)]


def needs_organization_key() -> list[FieldExtension]:
    return [PermissionExtension(permissions=[RequireOrganizationKey()], use_directives=False)]
