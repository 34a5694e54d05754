"""Where a key is rotated: a new secret for the same name, scopes and limits, while the old
secret keeps working for a grace period (app/keys/policy.py applies the single-active-key
policy to the new key, as to any new key)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.auth.secret import generate_secret, hash_secret, hint_for
from app.keys import idempotency
from app.keys.broadcast import KeyChangeBroadcast, announce_after_commit
from app.keys.policy import rotated_lifetime, supersede_others
from app.keys.power import management_refusal
from app.keys.replay import Replay
from app.keys.repository import add_key, claim_for_rotation, get_key
from app.keys.schemas import GRACE_HOURS_MAX, KeyRotate, KeyRotated
from app.keys.validation import check_idempotency_key, name_taken, not_found
from app.kit.errors import UserError, UserErrorCode
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.keys import ApiKey, KeyStatus
from app.models.organizations import Organization


def _unrotatable(old: ApiKey, now: datetime) -> UserError | None:
    """Why ``old`` cannot be rotated: revoked, expired or already replaced."""
    status = old.status_at(now)
    if status is not KeyStatus.ACTIVE:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "id",
            f"Key '{old.name}' ({old.hint}) is {status.value.lower()} and cannot be rotated; "
            "create a new key instead.",
        )
    if old.superseded_at is not None:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "id",
            f"Key '{old.name}' ({old.hint}) was already rotated and stops working at "
            f"{old.superseded_at.isoformat()}; rotate its replacement instead.",
        )
    return None


async def rotate_key(
    session: AsyncSession,
    caller: Caller,
    data: KeyRotate,
    *,
    key_prefix: str,
    broadcast: KeyChangeBroadcast,
    server_secret: bytes | None = None,
    previous_server_secret: bytes | None = None,
) -> KeyRotated | list[UserError]:
    """A new secret with the old key's name, scopes and limits; the old secret keeps working
    for the grace period (0: it stops at once, for a leaked key), then is SUPERSEDED."""
    old = await _rotatable_by(session, caller, data)
    if isinstance(old, list):
        return old
    # Every check of power ran above, before a replay is looked for: a replay must not answer
    # a caller the request itself would refuse.
    digest = idempotency.request_digest(
        "rotateApiKey",
        {"id": data.key_id, "gracePeriodHours": data.grace_period_hours},
        caller,
    )
    replay = Replay(
        session, caller, data.idempotency_key, digest, server_secret, previous_server_secret
    )
    replayed = await replay.rotation()
    if replayed is not None:
        return replayed
    now = utcnow()
    unrotatable = _unrotatable(old, now)
    if unrotatable is not None:
        # The same request sent twice: the first may have committed since the check above.
        return await replay.rotation() or [unrotatable]
    policy = await session.get(Organization, caller.organization_id)
    assert policy is not None, "a caller's organization exists"
    secret = generate_secret(key_prefix)
    new = _successor(old, caller, policy, secret, key_prefix, now)
    sunset = now + timedelta(hours=data.grace_period_hours)
    lost = await _replace(session, old, new, sunset)
    if lost is not None:
        # If it was this very request sent twice (a retry while the first was in flight),
        # the first one's answer.
        return await replay.rotation() or [lost]
    _record_rotation(session, caller, old, new, data.grace_period_hours, sunset)
    announce_after_commit(session, broadcast, old.id)
    if policy.single_active_key:
        # The old key is not replaced again: it is already marked as replaced by ``new``.
        await supersede_others(
            session,
            caller,
            new,
            grace_hours=policy.supersede_grace_hours,
            keep=caller.key_id,
            broadcast=broadcast,
        )
    await replay.remember("rotateApiKey", new.id, secret, previous_api_key_id=old.id)
    await session.flush()
    return KeyRotated(new, secret, old)


async def _rotatable_by(
    session: AsyncSession, caller: Caller, data: KeyRotate
) -> ApiKey | list[UserError]:
    """The key to rotate, once the input is valid and the caller may rotate it."""
    misuse = check_idempotency_key(data.idempotency_key)
    if misuse is not None:
        return [misuse]
    if not 0 <= data.grace_period_hours <= GRACE_HOURS_MAX:
        return [
            UserError(
                UserErrorCode.INVALID_INPUT,
                "gracePeriodHours",
                f"gracePeriodHours must be between 0 and {GRACE_HOURS_MAX}, "
                f"got {data.grace_period_hours}.",
            )
        ]
    old = await get_key(session, caller, data.key_id)
    if old is None:
        return [not_found(data.key_id)]
    refusal = await management_refusal(session, caller, old, "rotate")
    return old if refusal is None else [refusal]


def _successor(
    old: ApiKey, caller: Caller, policy: Organization, secret: str, key_prefix: str, now: datetime
) -> ApiKey:
    """The new key: the old one's name, scopes, limits and controls (enabled, metadata,
    allowlist, credits), its own secret and lifetime."""
    lifetime = rotated_lifetime(old, policy)
    return ApiKey(
        organization_id=caller.organization_id,
        name=old.name,
        name_key=old.name_key,
        scopes_text=old.scopes_text,
        key_hash=hash_secret(secret),
        hint=hint_for(secret, key_prefix),
        created_at=now,
        created_by_key_id=caller.key_id,
        expires_at=None if lifetime is None else now + lifetime,
        rate_limit_requests=old.rate_limit_requests,
        rate_limit_per_seconds=old.rate_limit_per_seconds,
        enabled=old.enabled,
        meta=old.meta,
        ip_allowlist=old.ip_allowlist,
        # The balance as last written (with Redis, up to a flush behind); during the grace
        # period each secret spends its own.
        credits_remaining=old.credits_remaining,
        credits_refill_amount=old.credits_refill_amount,
        credits_refill_interval=old.credits_refill_interval,
        credits_period=old.credits_period,
    )


async def _replace(
    session: AsyncSession, old: ApiKey, new: ApiKey, sunset: datetime
) -> UserError | None:
    """Mark ``old`` as replaced by ``new`` from ``sunset`` and add ``new``; why not, when a
    concurrent request rotated or revoked ``old`` first or took its name."""
    try:
        # One savepoint: a name taken meanwhile must not leave the old key marked as replaced.
        async with session.begin_nested():
            claimed = await claim_for_rotation(session, old, new.id, sunset)
            if claimed:
                add_key(session, new)
    except IntegrityError:
        return name_taken(old.name)
    if not claimed:
        await session.refresh(old)
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "id",
            f"Key '{old.name}' ({old.hint}) was just rotated or revoked by another request; "
            "reload the key to see its state.",
        )
    set_committed_value(old, "superseded_at", sunset)
    set_committed_value(old, "superseded_by_key_id", new.id)
    return None


def _record_rotation(
    session: AsyncSession,
    caller: Caller,
    old: ApiKey,
    new: ApiKey,
    grace_period_hours: int,
    sunset: datetime,
) -> None:
    record_event(
        session,
        caller,
        AuditAction.KEY_ROTATED,
        api_key_id=old.id,
        details={
            "name": old.name,
            "previousHint": old.hint,
            "newKeyId": new.id,
            "newHint": new.hint,
            "gracePeriodHours": grace_period_hours,
            "oldKeyStopsAt": sunset,
        },
    )
