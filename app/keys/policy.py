"""Where the single-active-key policy is applied: a new key (created or rotated) replaces the
organization's other active keys after a grace period; and how long a rotated key lives."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.broadcast import EVERY_KEY, KeyChangeBroadcast, announce_after_commit
from app.keys.repository import (
    SUPERSEDED_LISTED,
    marked_in,
    pending_supersession,
    supersede_batch,
    superseded_by,
)
from app.keys.schemas import ROTATION_DEFAULT_DAYS
from app.kit.db import after_commit
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_events
from app.models.keys import ApiKey, KeySupersession
from app.models.organizations import Organization

# Keys marked per transaction: a creation marks the first batch itself (an organization of a
# few keys sees its keys replaced in the creation's own transaction, as ever), the rest are
# marked in batches of their own transactions (app/keys/supersession.py).
SUPERSEDED_PER_BATCH = 1000


async def supersede_others(
    session: AsyncSession,
    caller: Caller,
    replacement: ApiKey,
    *,
    grace_hours: int,
    keep: str | None,
    broadcast: KeyChangeBroadcast,
) -> list[ApiKey]:
    """Single-active-key policy: every other active key of the organization is replaced by
    ``replacement`` after the grace period. The caller's own key is kept (``keep``): a caller
    never locks itself out. Bounded however many keys are replaced: the first batch is marked
    here, with its audit events, and a supersession that may have more keys is left for later
    batches, verification treating its keys as marked from the commit on. The keys marked, up to
    SUPERSEDED_LISTED."""
    supersession = KeySupersession(
        replacement_key_id=replacement.id,
        organization_id=caller.organization_id,
        replaced_before=replacement.created_at,
        effective_at=utcnow() + timedelta(hours=grace_hours),
        kept_key_id=keep,
        actor_key_id=caller.key_id,
        actor_hint=caller.key_hint,
    )
    # An earlier supersession still marking keeps its keys: this one waits for its turn.
    remaining = await pending_supersession(session, caller.organization_id)
    marked: list[str] = []
    if not remaining:
        marked, remaining = await mark_batch(session, supersession, limit=SUPERSEDED_PER_BATCH)
    if remaining:
        session.add(supersession)
        wake_after_commit(session)
    if remaining or len(marked) > SUPERSEDED_LISTED:
        # Too many to name one by one: every instance drops its whole cache instead.
        announce_after_commit(session, broadcast, EVERY_KEY)
    else:
        for key_id in marked:
            announce_after_commit(session, broadcast, key_id)
    return await superseded_by(session, caller, replacement.id) if marked else []


# The session's info holds, under this name, what to call once a supersession left for later
# batches is committed (the running instance's worker: app/runtime.py), so that its batches
# start at once rather than at the worker's next look.
SUPERSESSION_LEFT = "supersession_left"


def wake_after_commit(session: AsyncSession) -> None:
    wake = session.info.get(SUPERSESSION_LEFT)
    if wake is not None and wake not in session.info.get("after_commit", []):
        after_commit(session, wake)


async def mark_batch(
    session: AsyncSession, supersession: KeySupersession, *, limit: int
) -> tuple[list[str], bool]:
    """One batch of the supersession's keys marked, each with its audit event (and its webhook
    event, announced when the key stops working); the keys marked and whether more may remain."""
    marked, remaining = await supersede_batch(session, supersession, limit=limit)
    if marked:
        actor = Caller(
            supersession.organization_id,
            frozenset(),
            supersession.actor_key_id,
            supersession.actor_hint,
        )
        replacement = await session.get(ApiKey, supersession.replacement_key_id)
        await record_events(
            session,
            actor,
            AuditAction.KEY_SUPERSEDED,
            marked_in(marked, supersession.replacement_key_id),
            details={
                "supersededByKeyId": supersession.replacement_key_id,
                "supersededByHint": None if replacement is None else replacement.hint,
                "effectiveAt": supersession.effective_at.isoformat(),
                "reason": "singleActiveKey policy",
            },
            takes_effect_at=supersession.effective_at,
        )
    return marked, remaining


def rotated_lifetime(old: ApiKey, policy: Organization) -> timedelta | None:
    """The new key lives as long as the old one did, within the organization's policy."""
    lifetime = None if old.expires_at is None else old.expires_at - old.created_at
    if policy.max_expires_in_days is not None:
        bound = timedelta(days=policy.max_expires_in_days)
        lifetime = bound if lifetime is None else min(lifetime, bound)
    if lifetime is None and policy.require_expiry:
        lifetime = timedelta(days=ROTATION_DEFAULT_DAYS)
    return lifetime
