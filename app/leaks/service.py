"""What a leak report does: for each token that is one of our keys, flag the key once (its
``leaked_at``), record ``KEY_LEAKED`` in the audit log (the ``key.leaked`` webhook with it), and,
unless the organization's policy says NOTIFY, revoke it through the one revocation, so that
every instance refuses it from the next request.

Anything that is not shaped like our keys (prefix, length, characters, checksum) is answered
false_positive without a database query; a well-formed token that matches no key costs one read
and writes nothing. The answer never says which organization a key belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.auth.secret import format_problem, hash_secret
from app.keys.broadcast import KeyChangeBroadcast
from app.keys.revocation import revoke_key
from app.kit.boundary import label
from app.kit.db import execute_core
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.keys import ApiKey
from app.models.organizations import LeakedKeyAction, Organization

# The token type keyhouse registers with secret scanners, and answers with.
TOKEN_TYPE = "keyhouse_api_key"  # noqa: S105 - a type name, not a secret
MAX_URL_LENGTH = 1000
MAX_SOURCE_LENGTH = 100


class Label(StrEnum):
    TRUE_POSITIVE = "true_positive"  # one of our keys, live or once live
    FALSE_POSITIVE = "false_positive"


@dataclass(frozen=True, slots=True)
class Report:
    token: str
    url: str
    source: str


async def _key_of(session: AsyncSession, token: str, key_prefix: str) -> ApiKey | None:
    if format_problem(token, key_prefix) is not None:
        return None
    statement = select(ApiKey).where(col(ApiKey.key_hash) == hash_secret(token))
    return (await session.exec(statement)).first()


async def _flag(session: AsyncSession, key: ApiKey) -> bool:
    """Marks the key leaked; False when it already was (the same token reported again, even by
    a concurrent report: the row decides)."""
    now = utcnow()
    result = await execute_core(
        session,
        update(ApiKey)
        .where(col(ApiKey.id) == key.id, col(ApiKey.leaked_at).is_(None))
        .values(leaked_at=now)
        .execution_options(synchronize_session=False),
    )
    if not getattr(result, "rowcount", 0):
        return False
    set_committed_value(key, "leaked_at", now)
    return True


async def handle_report(
    session: AsyncSession,
    report: Report,
    *,
    key_prefix: str,
    broadcast: KeyChangeBroadcast,
) -> Label:
    key = await _key_of(session, report.token, key_prefix)
    if key is None:
        return Label.FALSE_POSITIVE
    if not await _flag(session, key):
        return Label.TRUE_POSITIVE
    organization = await session.get(Organization, key.organization_id)
    assert organization is not None, "a key's organization exists"
    action = LeakedKeyAction(organization.leaked_key_action)
    if key.revoked_at is not None:
        action = LeakedKeyAction.NOTIFY  # nothing left to revoke
    # The reporter acts with exactly the key's own power: enough to revoke it, nothing more.
    reporter = Caller(key.organization_id, frozenset(key.scopes))
    record_event(
        session,
        reporter,
        AuditAction.KEY_LEAKED,
        api_key_id=key.id,
        details={
            "url": label(report.url, MAX_URL_LENGTH),
            "source": label(report.source, MAX_SOURCE_LENGTH),
            "action": action.value,
        },
    )
    if action is LeakedKeyAction.REVOKE:
        await revoke_key(session, reporter, key.id, broadcast=broadcast)
    await session.flush()
    return Label.TRUE_POSITIVE
