from __future__ import annotations

from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.auth.secret import generate_secret, hash_secret, hint_for
from app.keys import idempotency
from app.keys.broadcast import KeyChangeBroadcast, announce_after_commit
from app.keys.policy import supersede_others
from app.keys.power import management_refusal
from app.keys.replay import Replay
from app.keys.repository import get_key, insert_key, live_name_exists
from app.keys.schemas import KeyCreate, KeyCreated
from app.keys.scopes import ScopeCatalogue
from app.keys.validation import check_create, check_idempotency_key, name_taken, not_found
from app.kit.boundary import name_key
from app.kit.errors import UserError
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.keys import ApiKey
from app.models.organizations import Organization


async def create_key(
    session: AsyncSession,
    caller: Caller,
    data: KeyCreate,
    *,
    catalogue: ScopeCatalogue,
    key_prefix: str,
    broadcast: KeyChangeBroadcast,
    server_secret: bytes | None = None,
) -> KeyCreated | list[UserError]:
    """``server_secret`` seals the secret of a request sent with an idempotency key."""
    policy = await session.get(Organization, caller.organization_id)
    assert policy is not None, "a caller's organization exists"
    misuse = check_idempotency_key(data.idempotency_key)
    if misuse is not None:
        return [misuse]
    # Every check before a replay: a replay must not answer a caller the request would refuse.
    name, scopes, errors = check_create(data, caller, catalogue, policy)
    if errors:
        return errors
    digest = idempotency.request_digest(
        "createApiKey",
        {
            "name": data.name,
            "scopes": scopes,
            "expiresInDays": data.expires_in_days,
            "rateLimit": data.rate_limit,
        },
        caller.scopes,
    )
    replay = Replay(session, caller, data.idempotency_key, digest, server_secret)
    replayed = await replay.creation()
    if replayed is not None:
        return replayed

    if await live_name_exists(session, caller.organization_id, name):
        # Taken by this very request sent twice (a retry while the first was in flight)?
        return await replay.creation() or [name_taken(name)]

    secret = generate_secret(key_prefix)
    now = utcnow()
    api_key = ApiKey(
        organization_id=caller.organization_id,
        name=name,
        name_key=name_key(name),
        scopes_text=" ".join(scopes),
        key_hash=hash_secret(secret),
        hint=hint_for(secret, key_prefix),
        created_at=now,
        created_by_key_id=caller.key_id,
        expires_at=(
            None if data.expires_in_days is None else now + timedelta(days=data.expires_in_days)
        ),
        rate_limit_requests=None if data.rate_limit is None else data.rate_limit.requests,
        rate_limit_per_seconds=None if data.rate_limit is None else data.rate_limit.per_seconds,
    )
    if not await insert_key(session, api_key):
        return await replay.creation() or [name_taken(name)]
    record_event(
        session,
        caller,
        AuditAction.KEY_CREATED,
        api_key_id=api_key.id,
        details={
            "name": name,
            "hint": api_key.hint,
            "scopes": scopes,
            "expiresAt": api_key.expires_at,
            "rateLimit": data.rate_limit,
        },
    )
    superseded: list[ApiKey] = []
    if policy.single_active_key:
        superseded = await supersede_others(
            session,
            caller,
            api_key,
            grace_hours=policy.supersede_grace_hours,
            keep=[caller.key_id] if caller.key_id else [],
            broadcast=broadcast,
        )
    await replay.remember("createApiKey", api_key.id, secret)
    await session.flush()
    return KeyCreated(api_key, secret, superseded)


async def revoke_key(
    session: AsyncSession, caller: Caller, key_id: str, *, broadcast: KeyChangeBroadcast
) -> ApiKey | UserError:
    """Revoke a key, permanently. Revoking a revoked key changes nothing and answers the same."""
    api_key = await get_key(session, caller, key_id)
    if api_key is None:
        return not_found(key_id)
    refusal = await management_refusal(session, caller, api_key, "revoke")
    if refusal is not None:
        return refusal
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        session.add(api_key)
        record_event(
            session,
            caller,
            AuditAction.KEY_REVOKED,
            api_key_id=api_key.id,
            details={"name": api_key.name, "hint": api_key.hint},
        )
        await session.flush()
        announce_after_commit(session, broadcast, api_key.id)
    return api_key
