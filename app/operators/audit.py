"""Reading the operator audit log: every operator action, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, literal, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.kit.db import execute_core
from app.kit.pagination import COUNT_LIMIT, Cursor
from app.models.operators import OperatorAction, OperatorAuditEvent


@dataclass(frozen=True, slots=True)
class OperatorAuditFilter:
    action: OperatorAction | None = None
    organization_id: str | None = None


@dataclass(frozen=True, slots=True)
class OperatorAuditPage:
    events: list[OperatorAuditEvent]
    has_next_page: bool


def _conditions(audit_filter: OperatorAuditFilter) -> list[Any]:
    conditions: list[Any] = []
    if audit_filter.action is not None:
        conditions.append(col(OperatorAuditEvent.action) == audit_filter.action.value)
    if audit_filter.organization_id is not None:
        conditions.append(col(OperatorAuditEvent.organization_id) == audit_filter.organization_id)
    return conditions


async def list_events(
    session: AsyncSession,
    audit_filter: OperatorAuditFilter,
    *,
    first: int,
    after: Cursor | None = None,
) -> OperatorAuditPage:
    conditions = _conditions(audit_filter)
    if after is not None:
        conditions.append(
            or_(
                col(OperatorAuditEvent.occurred_at) < after.created_at,
                and_(
                    col(OperatorAuditEvent.occurred_at) == after.created_at,
                    col(OperatorAuditEvent.id) < after.id,
                ),
            )
        )
    statement = (
        select(OperatorAuditEvent)
        .where(*conditions)
        .order_by(col(OperatorAuditEvent.occurred_at).desc(), col(OperatorAuditEvent.id).desc())
        .limit(first + 1)
    )
    rows = list((await session.exec(statement)).all())
    return OperatorAuditPage(rows[:first], has_next_page=len(rows) > first)


async def count_events(session: AsyncSession, audit_filter: OperatorAuditFilter) -> int:
    """How many match, up to COUNT_LIMIT (the log only grows)."""
    matching = (
        sa_select(literal(1))
        .select_from(OperatorAuditEvent)
        .where(*_conditions(audit_filter))
        .limit(COUNT_LIMIT)
    )
    statement = sa_select(func.count()).select_from(matching.subquery())
    count: int = (await execute_core(session, statement)).scalar_one()
    return count
