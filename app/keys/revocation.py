"""Where a key is revoked: at once, for good, on every instance from the next request."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.broadcast import KeyChangeBroadcast, announce_after_commit
from app.keys.power import management_refusal
from app.keys.repository import get_key
from app.keys.validation import not_found
from app.kit.errors import UserError
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.keys import ApiKey


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
