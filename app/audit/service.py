"""The audit log: every key creation, revocation, rotation, supersession and policy change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.kit.pagination import Cursor
from app.models.audit import AuditAction, AuditEvent


@dataclass(frozen=True, slots=True)
class AuditFilter:
    action: AuditAction | None = None
    api_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    total_count: int
    has_next_page: bool


async def list_events(
    session: AsyncSession,
    caller: Caller,
    audit_filter: AuditFilter,
    *,
    first: int,
    after: Cursor | None = None,
) -> AuditPage:
    """A page of the organization's audit log, newest first."""
    conditions: list[Any] = [col(AuditEvent.organization_id) == caller.organization_id]
    if audit_filter.action is not None:
        conditions.append(col(AuditEvent.action) == audit_filter.action.value)
    if audit_filter.api_key_id is not None:
        conditions.append(col(AuditEvent.api_key_id) == audit_filter.api_key_id)
    total = (
        await session.exec(select(func.count()).select_from(AuditEvent).where(*conditions))
    ).one()
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
    return AuditPage(events=rows[:first], total_count=total, has_next_page=len(rows) > first)
