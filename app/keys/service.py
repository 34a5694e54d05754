"""Where a key is created: checked, made with its secret (shown once), recorded in the audit
log, and, under the single-active-key policy, replacing the organization's other keys.

Services take the session first and the caller second, confine themselves to the caller's
organization, and flush, never commit: the request (or CLI command) owns the transaction.
Rotation is app/keys/rotation.py, revocation app/keys/revocation.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.auth.secret import generate_secret, hash_secret, hint_for
from app.keys import idempotency
from app.keys.broadcast import KeyChangeBroadcast
from app.keys.credits import refill_period
from app.keys.policy import supersede_others
from app.keys.replay import Replay
from app.keys.repository import insert_key, live_name_exists
from app.keys.schemas import KeyCreate, KeyCreated
from app.keys.scopes import ScopeCatalogue
from app.keys.validation import CheckedCreate, check_create, check_idempotency_key, name_taken
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
    previous_server_secret: bytes | None = None,
) -> KeyCreated | list[UserError]:
    """``server_secret`` seals the secret of a request sent with an idempotency key."""
    policy = await session.get(Organization, caller.organization_id)
    assert policy is not None, "a caller's organization exists"
    misuse = check_idempotency_key(data.idempotency_key)
    if misuse is not None:
        return [misuse]
    # Every check before a replay: a replay must not answer a caller the request would refuse.
    checked = check_create(data, caller, catalogue, policy)
    if isinstance(checked, list):
        return checked
    name = checked.name
    digest = idempotency.request_digest(
        "createApiKey",
        {
            "name": data.name,
            "scopes": checked.scopes,
            "expiresInDays": data.expires_in_days,
            "rateLimit": None if data.rate_limit is None else data.rate_limit.as_json(),
            **_controls(checked, data),
        },
        caller,
    )
    replay = Replay(
        session, caller, data.idempotency_key, digest, server_secret, previous_server_secret
    )
    replayed = await replay.creation()
    if replayed is not None:
        return replayed

    if await live_name_exists(session, caller.organization_id, name):
        # Taken by this very request sent twice (a retry while the first was in flight)?
        return await replay.creation() or [name_taken(name)]

    secret = generate_secret(key_prefix)
    api_key = _new_key(caller, checked, data, secret, key_prefix)
    if not await insert_key(session, api_key):
        return await replay.creation() or [name_taken(name)]
    _record_creation(session, caller, api_key, data, _controls(checked, data))
    superseded: list[ApiKey] = []
    if policy.single_active_key:
        superseded = await supersede_others(
            session,
            caller,
            api_key,
            grace_hours=policy.supersede_grace_hours,
            keep=caller.key_id,
            broadcast=broadcast,
        )
    await replay.remember("createApiKey", api_key.id, secret)
    await session.flush()
    return KeyCreated(api_key, secret, superseded)


def _controls(checked: CheckedCreate, data: KeyCreate) -> dict[str, Any]:
    """The controls a creation was given, as audit details and request digests name them; none
    when it was given none (so that digests of requests without them stay as they were)."""
    controls = {
        "meta": None if checked.meta is None else json.loads(checked.meta),
        "ipAllowlist": None if checked.ip_allowlist is None else checked.ip_allowlist.split(),
        "credits": None if data.credits is None else data.credits.as_json(),
    }
    return {name: value for name, value in controls.items() if value is not None}


def _new_key(
    caller: Caller, checked: CheckedCreate, data: KeyCreate, secret: str, key_prefix: str
) -> ApiKey:
    now = utcnow()
    limit, credits = data.rate_limit, data.credits
    refill = None if credits is None else credits.refill
    return ApiKey(
        organization_id=caller.organization_id,
        name=checked.name,
        name_key=name_key(checked.name),
        scopes_text=" ".join(checked.scopes),
        meta=checked.meta,
        ip_allowlist=checked.ip_allowlist,
        credits_remaining=None if credits is None else credits.remaining,
        credits_refill_amount=None if refill is None else refill.amount,
        credits_refill_interval=None if refill is None else refill.interval.value,
        credits_period=(
            None
            if credits is None
            else refill_period(None if refill is None else refill.interval, now)
        ),
        key_hash=hash_secret(secret),
        hint=hint_for(secret, key_prefix),
        created_at=now,
        created_by_key_id=caller.key_id,
        expires_at=(
            None if data.expires_in_days is None else now + timedelta(days=data.expires_in_days)
        ),
        rate_limit_requests=None if limit is None else limit.requests,
        rate_limit_per_seconds=None if limit is None else limit.per_seconds,
    )


def _record_creation(
    session: AsyncSession,
    caller: Caller,
    api_key: ApiKey,
    data: KeyCreate,
    controls: dict[str, Any],
) -> None:
    record_event(
        session,
        caller,
        AuditAction.KEY_CREATED,
        api_key_id=api_key.id,
        details={
            "name": api_key.name,
            "hint": api_key.hint,
            "scopes": api_key.scopes,
            "expiresAt": api_key.expires_at,
            "rateLimit": None if data.rate_limit is None else data.rate_limit.as_json(),
            **controls,
        },
    )
