"""Operator keys: made, listed and revoked on the server (``keyhouse operator-keys``), never
through the API, so that no key can make a stronger one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.secret import generate_secret, hash_secret, hint_for, operator_prefix
from app.keys.schemas import NAME_MAX_LENGTH
from app.kit.boundary import excerpt, name_problem
from app.kit.errors import UserError, UserErrorCode
from app.kit.timeutil import utcnow
from app.models.operators import OperatorAction, OperatorKey, record_operator_event


@dataclass(frozen=True, slots=True)
class OperatorKeyCreated:
    operator_key: OperatorKey
    # Shown once, never stored.
    secret: str


async def create_operator_key(
    session: AsyncSession, name: str, *, key_prefix: str
) -> OperatorKeyCreated | UserError:
    name = name.strip()
    problem = name_problem(name, max_length=NAME_MAX_LENGTH)
    if not name or problem is not None:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "name",
            f"An operator key's name has 1 to {NAME_MAX_LENGTH} characters"
            + ("." if problem is None else f"; {excerpt(name)!r} {problem}."),
        )
    prefix = operator_prefix(key_prefix)
    secret = generate_secret(prefix)
    key = OperatorKey(name=name, key_hash=hash_secret(secret), hint=hint_for(secret, prefix))
    session.add(key)
    record_operator_event(
        session,
        None,
        OperatorAction.OPERATOR_KEY_CREATED,
        details={"operatorKeyId": key.id, "name": key.name, "hint": key.hint},
    )
    await session.flush()
    return OperatorKeyCreated(key, secret)


async def list_operator_keys(session: AsyncSession) -> list[OperatorKey]:
    """Every operator key, newest first (there are a handful)."""
    statement = select(OperatorKey).order_by(
        col(OperatorKey.created_at).desc(), col(OperatorKey.id).desc()
    )
    return list((await session.exec(statement)).all())


async def revoke_operator_key(session: AsyncSession, key_id: str) -> OperatorKey | UserError:
    """Revoke for good; revoking a revoked key changes nothing. Operator keys are read from the
    database on every request, so the next request is refused on every instance."""
    key = await session.get(OperatorKey, key_id)
    if key is None:
        return UserError(UserErrorCode.NOT_FOUND, "id", f"No operator key {excerpt(key_id)!r}.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        record_operator_event(
            session,
            None,
            OperatorAction.OPERATOR_KEY_REVOKED,
            details={"operatorKeyId": key.id, "name": key.name, "hint": key.hint},
        )
        await session.flush()
    return key
