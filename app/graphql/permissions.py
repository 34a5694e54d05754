"""Scope checks for GraphQL fields, as Strawberry permission extensions.

``permission_classes`` cannot take arguments, so each field gets a ``PermissionExtension``
holding a ``RequireScope`` instance; its error carries ``extensions.requiredScope``.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension

from app.graphql.context import Info


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
