"""The delivery worker's SQL: fanning the outbox out to endpoints, claiming due deliveries, and
writing down how each attempt went.

Several instances share the work without a coordinator. Each step is one short transaction
that takes rows no other instance holds: on PostgreSQL ``FOR UPDATE SKIP LOCKED``; on SQLite
the statement itself, since SQLite runs one writing statement at a time. A claimed delivery is
leased: it stays PENDING, and another instance takes it over only when the lease has run out
(the instance that held it crashed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, text, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.kit.db import UTCDateTime, execute_core
from app.kit.ids import new_id
from app.models.events import OutboxEvent, event_body
from app.models.webhooks import DeliveryStatus, WebhookDelivery, WebhookEndpoint

# Where the locking clause goes (nothing on SQLite).
_LOCKING = "/*locking*/"
_FAN_OUT = (
    "UPDATE outbox_events SET fanned_out_at = :now WHERE sequence IN ("
    " SELECT sequence FROM outbox_events o"
    " WHERE fanned_out_at IS NULL AND occurred_at <= :now"
    " ORDER BY sequence LIMIT :limit /*locking*/)"
    " RETURNING sequence, id, organization_id, type, subject_id, occurred_at, data"
)
_CLAIM = (
    "UPDATE webhook_deliveries SET leased_until = :lease_end WHERE id IN ("
    " SELECT d.id FROM webhook_deliveries d"
    " WHERE d.status = 'PENDING' AND d.next_attempt_at <= :now"
    " AND (d.leased_until IS NULL OR d.leased_until <= :now)"
    " AND NOT EXISTS (SELECT 1 FROM webhook_endpoints e"
    "  WHERE e.id = d.endpoint_id AND e.disabled_at IS NOT NULL)"
    " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p"
    "  WHERE p.status = 'PENDING' AND p.endpoint_id = d.endpoint_id"
    "  AND p.subject_id = d.subject_id AND p.event_sequence < d.event_sequence)"
    " AND NOT EXISTS (SELECT 1 FROM outbox_events o"
    "  WHERE o.fanned_out_at IS NULL AND o.occurred_at <= :now"
    "  AND o.subject_id = d.subject_id AND o.sequence < d.event_sequence)"
    " ORDER BY d.next_attempt_at LIMIT :limit /*locking*/)"
    " RETURNING id, endpoint_id, organization_id, event_id, payload, attempts, created_at"
)


# The claim reads due deliveries in the order they are due and stops at its batch: the disabled
# endpoints are a NOT EXISTS, not a join, which would lead the planner to read every pending
# delivery of an endpoint and sort them. An earlier event about the same subject is looked up
# by subject (both questions have an index of their own).


def _skip_locked(session: AsyncSession, table: str) -> str:
    """PostgreSQL's clause that takes only rows no other transaction holds; SQLite's writing
    statements run one at a time, so the statement alone is enough there."""
    if session.get_bind().dialect.name != "postgresql":
        return ""
    return f" FOR UPDATE OF {table} SKIP LOCKED"


async def fan_out(session: AsyncSession, now: datetime, *, limit: int) -> int:
    """Takes up to ``limit`` events that are due and not yet fanned out, oldest first, and makes
    a delivery of each for every enabled endpoint of its organization subscribed to its type.
    How many events it took."""
    statement = _FAN_OUT.replace(_LOCKING, _skip_locked(session, "o"))
    taken = await execute_core(
        session,
        text(statement).bindparams(bindparam("now", type_=_TIME)).columns(occurred_at=_TIME),
        {"now": now, "limit": limit},
    )
    events = sorted(
        (OutboxEvent(**{**row._mapping, "occurred_at": row.occurred_at}) for row in taken),
        key=_sequence,
    )
    if not events:
        return 0
    organizations = {event.organization_id for event in events}
    endpoints = (
        await session.exec(
            select(WebhookEndpoint).where(
                col(WebhookEndpoint.organization_id).in_(organizations),
                col(WebhookEndpoint.disabled_at).is_(None),
            )
        )
    ).all()
    deliveries = [
        _delivery(event, endpoint, now)
        for event in events
        for endpoint in endpoints
        if endpoint.organization_id == event.organization_id
        and event.type in endpoint.events
        # An endpoint receives what happens once it exists, not the history before it.
        and event.occurred_at >= endpoint.created_at
    ]
    if deliveries:
        await execute_core(session, insert(WebhookDelivery), deliveries)  # type: ignore[arg-type]
    return len(events)


# Textual statements bind and read times as the models do (naive UTC in SQLite).
_TIME = UTCDateTime()


def _sequence(event: OutboxEvent) -> int:
    return event.sequence or 0


def _delivery(event: OutboxEvent, endpoint: WebhookEndpoint, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id("whd"),
        "endpoint_id": endpoint.id,
        "organization_id": event.organization_id,
        "event_id": event.id,
        "event_type": event.type,
        "event_sequence": event.sequence,
        "subject_id": event.subject_id,
        "payload": event_body(event),
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
    }


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    endpoint_id: str
    organization_id: str
    event_id: str
    payload: str
    attempts: int
    created_at: datetime


async def claim(
    session: AsyncSession, now: datetime, *, lease: timedelta, limit: int
) -> list[Claimed]:
    """Leases up to ``limit`` due deliveries of enabled endpoints. A delivery waits while an
    earlier one to the same endpoint about the same key (or policy) is pending, and while an
    earlier event about it is due but not yet fanned out (another instance, or another loop,
    may be fanning it out right now, its rows not yet committed): each endpoint receives a key's
    events in the order they happened, retries included."""
    statement = _CLAIM.replace(_LOCKING, _skip_locked(session, "d"))
    taken = await execute_core(
        session,
        text(statement)
        .bindparams(bindparam("now", type_=_TIME), bindparam("lease_end", type_=_TIME))
        .columns(created_at=_TIME),
        {"now": now, "lease_end": now + lease, "limit": limit},
    )
    return [Claimed(**{**row._mapping, "created_at": row.created_at}) for row in taken]


async def endpoints_by_id(
    session: AsyncSession, endpoint_ids: Sequence[str]
) -> dict[str, WebhookEndpoint]:
    rows = await session.exec(
        select(WebhookEndpoint).where(col(WebhookEndpoint.id).in_(endpoint_ids))
    )
    return {row.id: row for row in rows.all()}


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt went, and what happens next."""

    delivery_id: str
    at: datetime
    response_status: int | None
    excerpt: str | None
    succeeded: bool
    # When to try again; None: no more attempts (succeeded, or given up).
    next_attempt_at: datetime | None


def _status(attempt: Attempt) -> DeliveryStatus:
    if attempt.succeeded:
        return DeliveryStatus.SUCCEEDED
    return DeliveryStatus.FAILED if attempt.next_attempt_at is None else DeliveryStatus.PENDING


async def record_attempts(session: AsyncSession, attempts: Sequence[Attempt]) -> None:
    """One statement for the whole batch (executemany: one round trip on asyncpg)."""
    if not attempts:
        return
    statement = (
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == bindparam("delivery_id"))
        .values(
            status=bindparam("new_status"),
            attempts=col(WebhookDelivery.attempts) + 1,
            last_attempt_at=bindparam("at", type_=_TIME),
            next_attempt_at=bindparam("next_at", type_=_TIME),
            leased_until=None,
            response_status=bindparam("code"),
            response_excerpt=bindparam("excerpt"),
            delivered_at=bindparam("delivered", type_=_TIME),
        )
    )
    rows = [
        {
            "delivery_id": attempt.delivery_id,
            "new_status": _status(attempt).value,
            "at": attempt.at,
            "next_at": attempt.next_attempt_at,
            "code": attempt.response_status,
            "excerpt": attempt.excerpt,
            "delivered": attempt.at if attempt.succeeded else None,
        }
        for attempt in attempts
    ]
    await execute_core(session, statement, rows)  # type: ignore[arg-type]


async def disable_endpoint(session: AsyncSession, endpoint_id: str, now: datetime) -> bool:
    """Disables the endpoint if it is enabled; whether this call did."""
    result = await execute_core(
        session,
        update(WebhookEndpoint)
        .where(col(WebhookEndpoint.id) == endpoint_id, col(WebhookEndpoint.disabled_at).is_(None))
        .values(disabled_at=now),
    )
    return bool(getattr(result, "rowcount", 0))


async def purge(
    session: AsyncSession, *, events_before: datetime, deliveries_before: datetime
) -> None:
    """Forgets events fanned out long ago and deliveries finished long ago."""
    await execute_core(
        session,
        delete(OutboxEvent).where(
            col(OutboxEvent.fanned_out_at).is_not(None),
            col(OutboxEvent.fanned_out_at) < events_before,
        ),
    )
    await execute_core(
        session,
        delete(WebhookDelivery).where(
            col(WebhookDelivery.status) != DeliveryStatus.PENDING.value,
            col(WebhookDelivery.created_at) < deliveries_before,
        ),
    )
