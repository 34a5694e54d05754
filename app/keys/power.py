"""Managing a key needs at least its power: the one check revocation and rotation share."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.repository import successors
from app.kit.errors import UserError, UserErrorCode
from app.models.keys import ApiKey


async def management_refusal(
    session: AsyncSession, caller: Caller, target: ApiKey, verb: str
) -> UserError | None:
    """Why ``caller`` may not revoke or rotate ``target``, if it may not. Managing a key needs
    at least its power; a key may always manage itself (a leaked key's holder revokes it), but a
    key in its grace period never its own replacement (the old secret could kill the new one)."""
    if caller.key_id == target.id:
        return None
    if any(not caller.holds(scope) for scope in target.scopes):
        return UserError(
            UserErrorCode.FORBIDDEN,
            "id",
            f"Only a key holding every scope of this key can {verb} it, and yours lacks some "
            "of them.",
        )
    replaced = caller.being_replaced and caller.key_id is not None
    if replaced and target.id in await successors(session, str(caller.key_id)):
        return UserError(
            UserErrorCode.FORBIDDEN,
            "id",
            f"Your key was replaced and works only until its grace period ends; it cannot "
            f"{verb} the key that replaced it. Use the new key.",
        )
    return None
