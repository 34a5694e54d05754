"""The audit log: every key creation, revocation, rotation, supersession and policy change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, literal, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.kit.db import execute_core
from app.kit.pagination import COUNT_LIMIT, Cursor
from app.models.audit import AuditAction, AuditEvent


@dataclass(frozen=True, slots=True)
class AuditFilter:
    action: AuditAction | None = None
    api_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    has_next_page: bool


def _conditions(caller: Caller, audit_filter: AuditFilter) -> list[Any]:
    conditions: list[Any] = [col(AuditEvent.organization_id) == caller.organization_id]
    if audit_filter.action is not None:
        conditions.append(col(AuditEvent.action) == audit_filter.action.value)
    if audit_filter.api_key_id is not None:
        conditions.append(col(AuditEvent.api_key_id) == audit_filter.api_key_id)
    return conditions


async def count_events(session: AsyncSession, caller: Caller, audit_filter: AuditFilter) -> int:
    """How many events match, up to COUNT_LIMIT (the log only grows: an exact count would read
    all of it)."""
    matching = (
        sa_select(literal(1))
        .select_from(AuditEvent)
        .where(*_conditions(caller, audit_filter))
        .limit(COUNT_LIMIT)
    )
    statement = sa_select(func.count()).select_from(matching.subquery())
    count: int = (await execute_core(session, statement)).scalar_one()
    return count


async def list_events(
    session: AsyncSession,
    caller: Caller,
    audit_filter: AuditFilter,
    *,
    first: int,
    after: Cursor | None = None,
) -> AuditPage:
    """A page of the organization's audit log, newest first."""
    conditions = _conditions(caller, audit_filter)
    if after is not None:
        conditions.append(
            or_(
                col(AuditEvent.occurred_at) < after.created_at,
                and_(
                    col(AuditEvent.occurred_at) == after.created_at,
                    col(AuditEvent.id) < after.id,
                ),
            )
        )
    statement = (
        select(AuditEvent)
        .where(*conditions)
        .order_by(col(AuditEvent.occurred_at).desc(), col(AuditEvent.id).desc())
        .limit(first + 1)
    )
    rows = list((await session.exec(statement)).all())
    return AuditPage(events=rows[:first], has_next_page=len(rows) > first)
