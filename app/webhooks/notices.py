"""Expiry notices: ``key.expiring`` 7 days and 1 day before a key expires, ``key.expired`` when
it has, each exactly once per key and occasion.

A periodic job on every instance, one at a time (a PostgreSQL advisory lock; SQLite writes one
transaction at a time). "Exactly once" does not rest on the lock: every notice carries a key
naming its occasion (``key_…:expiring-7d``) that the outbox holds only once, so a second
instance, a restart or a retried run finds nothing left to say.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, literal_column, or_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.kit.db import SessionMaker, execute_core, is_outage, session_scope
from app.kit.timeutil import utcnow
from app.models.audit import wake_delivery_after_commit
from app.models.events import EventType, OutboxEvent, event_data
from app.models.keys import ApiKey

logger = logging.getLogger(__name__)

# Keys past any of these in one run: the rest are taken at the next run.
BATCH = 1000
# A key that expired longer ago than this is not announced (the job was not running then, or
# the key expired before webhooks existed): an old expiry is not news.
EXPIRED_LOOKBACK = timedelta(days=7)
# Any constant the instances agree on.
_LOCK_ID = 7_318_220_411


@dataclass(frozen=True, slots=True)
class Notice:
    name: str
    event: EventType
    # Announced when the key expires within this much time (None: has expired).
    before: timedelta | None
    # ... and not within this much (the next, closer notice's window).
    closer: timedelta | None


NOTICES = (
    Notice("expiring-7d", EventType.KEY_EXPIRING, timedelta(days=7), timedelta(days=1)),
    Notice("expiring-1d", EventType.KEY_EXPIRING, timedelta(days=1), timedelta(0)),
    Notice("expired", EventType.KEY_EXPIRED, None, None),
)


def _once_key(key_id: str, notice: Notice) -> str:
    return f"{key_id}:{notice.name}"


def _lived_past(dialect: str, before: timedelta) -> Any:
    """The key was created before this notice's moment: a key made to live 3 days never hears
    that it has 7 left."""
    days = before.days
    if dialect == "postgresql":
        return text(f"api_keys.created_at <= api_keys.expires_at - interval '{days} days'")
    return text(f"api_keys.created_at <= datetime(api_keys.expires_at, '-{days} days')")


async def _due(session: AsyncSession, notice: Notice, now: datetime) -> list[ApiKey]:
    dialect = session.get_bind().dialect.name
    expires_at = col(ApiKey.expires_at)
    if notice.before is None:
        window = [expires_at <= now, expires_at > now - EXPIRED_LOOKBACK]
    else:
        assert notice.closer is not None
        window = [
            expires_at <= now + notice.before,
            expires_at > now + notice.closer,
            _lived_past(dialect, notice.before),
        ]
    said = exists().where(
        col(OutboxEvent.once_key) == col(ApiKey.id).concat(literal_column(f"':{notice.name}'"))
    )
    statement = (
        select(ApiKey)
        .where(
            col(ApiKey.revoked_at).is_(None),
            expires_at.is_not(None),
            *window,
            or_(col(ApiKey.superseded_at).is_(None), col(ApiKey.superseded_at) > now),
            ~said,
        )
        .order_by(expires_at)
        .limit(BATCH)
        # The keys noticed are held (as a change to them would be) before their events are
        # numbered; a key another transaction is changing right now waits for the next run, so
        # the job never waits on a key while holding others.
        .with_for_update(of=ApiKey, key_share=True, skip_locked=True)
    )
    return list((await session.exec(statement)).all())


async def _locked(session: AsyncSession) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True
    result = await execute_core(session, text(f"SELECT pg_try_advisory_xact_lock({_LOCK_ID})"))
    return bool(result.scalar())


async def notice_expiries(session: AsyncSession, now: datetime) -> int:
    """Writes the notices due at ``now`` that were not written yet; how many."""
    if not await _locked(session):
        return 0  # another instance is at it
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    written = 0
    for notice in NOTICES:
        keys = await _due(session, notice, now)
        if not keys:
            continue
        rows = [_row(key, notice, now) for key in keys]
        statement = insert(OutboxEvent).on_conflict_do_nothing(index_elements=["once_key"])
        await execute_core(session, statement, rows)  # type: ignore[arg-type]
        written += len(rows)
    if written:
        wake_delivery_after_commit(session)
    return written


def _row(key: ApiKey, notice: Notice, now: datetime) -> dict[str, Any]:
    data: dict[str, Any] = {"key": key.public_fields(now)}
    if notice.before is not None:
        data["expiresInDays"] = notice.before.days
    event = OutboxEvent(
        organization_id=key.organization_id,
        type=notice.event.value,
        subject_id=key.id,
        occurred_at=now,
        data=event_data(data),
        once_key=_once_key(key.id, notice),
    )
    return event.model_dump(exclude={"sequence", "fanned_out_at"})


async def notice_expiries_periodically(
    sessionmaker: SessionMaker, interval_seconds: float, clock: Callable[[], datetime] = utcnow
) -> None:
    while True:
        try:
            async with session_scope(sessionmaker) as session:
                written = await notice_expiries(session, clock())
            if written:
                logger.info("expiry notices: %d written", written)
        except Exception as error:
            if is_outage(error):
                logger.warning("expiry notices wait: the database did not answer")
            else:
                logger.exception("expiry notices failed; trying again at the next interval")
        await asyncio.sleep(interval_seconds)
