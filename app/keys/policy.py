"""Where the single-active-key policy is applied: a new key (created or rotated) replaces the
organization's other active keys after a grace period; and how long a rotated key lives."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.broadcast import KeyChangeBroadcast, announce_after_commit
from app.keys.repository import SUPERSEDED_ORDER, supersedable
from app.keys.schemas import ROTATION_DEFAULT_DAYS
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.keys import ApiKey
from app.models.organizations import Organization


async def supersede_others(
    session: AsyncSession,
    caller: Caller,
    replacement: ApiKey,
    *,
    grace_hours: int,
    keep: Sequence[str],
    broadcast: KeyChangeBroadcast,
) -> list[ApiKey]:
    """Single-active-key policy: every other active key of the organization is replaced by
    ``replacement`` after the grace period. The caller's own key is kept (``keep``): a caller
    never locks itself out."""
    now = utcnow()
    statement = (
        select(ApiKey)
        .where(*supersedable(caller, now, keep=[replacement.id, *keep]))
        .order_by(*SUPERSEDED_ORDER)
    )
    superseded = list((await session.exec(statement)).all())
    effective = now + timedelta(hours=grace_hours)
    for old in superseded:
        old.superseded_at = effective
        old.superseded_by_key_id = replacement.id
        session.add(old)
        record_event(
            session,
            caller,
            AuditAction.KEY_SUPERSEDED,
            api_key_id=old.id,
            details={
                "supersededByKeyId": replacement.id,
                "supersededByHint": replacement.hint,
                "effectiveAt": effective.isoformat(),
                "reason": "singleActiveKey policy",
            },
        )
        announce_after_commit(session, broadcast, old.id)
    return superseded


def rotated_lifetime(old: ApiKey, policy: Organization) -> timedelta | None:
    """The new key lives as long as the old one did, within the organization's policy."""
    lifetime = None if old.expires_at is None else old.expires_at - old.created_at
    if policy.max_expires_in_days is not None:
        bound = timedelta(days=policy.max_expires_in_days)
        lifetime = bound if lifetime is None else min(lifetime, bound)
    if lifetime is None and policy.require_expiry:
        lifetime = timedelta(days=ROTATION_DEFAULT_DAYS)
    return lifetime
