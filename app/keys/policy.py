"""Where the single-active-key policy is applied: a new key (created or rotated) replaces the
organization's other active keys after a grace period; and how long a rotated key lives."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.broadcast import EVERY_KEY, KeyChangeBroadcast, announce_after_commit
from app.keys.repository import supersede, superseded_by, superseded_ids
from app.keys.schemas import ROTATION_DEFAULT_DAYS
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_events
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
    never locks itself out. A few statements however many keys are replaced (the update, their
    audit events, the first of them for the answer); the keys replaced, up to SUPERSEDED_LISTED."""
    effective = utcnow() + timedelta(hours=grace_hours)
    replaced = await supersede(session, caller, replacement.id, effective, keep=keep)
    if not replaced:
        return []
    await record_events(
        session,
        caller,
        AuditAction.KEY_SUPERSEDED,
        superseded_ids(caller, replacement.id),
        details={
            "supersededByKeyId": replacement.id,
            "supersededByHint": replacement.hint,
            "effectiveAt": effective.isoformat(),
            "reason": "singleActiveKey policy",
        },
        takes_effect_at=effective,
    )
    listed = await superseded_by(session, caller, replacement.id)
    if replaced > len(listed):
        # Too many to name one by one: every instance drops its whole cache instead.
        announce_after_commit(session, broadcast, EVERY_KEY)
    else:
        for old in listed:
            announce_after_commit(session, broadcast, old.id)
    return listed


def rotated_lifetime(old: ApiKey, policy: Organization) -> timedelta | None:
    """The new key lives as long as the old one did, within the organization's policy."""
    lifetime = None if old.expires_at is None else old.expires_at - old.created_at
    if policy.max_expires_in_days is not None:
        bound = timedelta(days=policy.max_expires_in_days)
        lifetime = bound if lifetime is None else min(lifetime, bound)
    if lifetime is None and policy.require_expiry:
        lifetime = timedelta(days=ROTATION_DEFAULT_DAYS)
    return lifetime
