"""Where a key is changed after it was made: its name, scopes, rate limit, metadata, allowlist,
credits, and whether it is enabled. Each change is one audit event listing the fields changed
(old → new), and drops the key from every instance's cache, so the next request sees it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.broadcast import KeyChangeBroadcast, announce_after_commit
from app.keys.credits import refill_period
from app.keys.power import management_refusal
from app.keys.repository import get_key, live_name_exists, replace_scope_rows
from app.keys.schemas import UNCHANGED, Credits, KeyUpdate, RateLimit
from app.keys.scopes import ScopeCatalogue
from app.keys.validation import (
    check_ip_allowlist,
    check_meta,
    credits_error,
    name_error,
    name_taken,
    not_found,
    rate_limit_error,
    scopes_error,
)
from app.kit.boundary import name_key
from app.kit.errors import UserError, UserErrorCode
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.keys import ApiKey, KeyStatus


@dataclass
class _Plan:
    """The new values of the fields that change, as columns, and what the audit log says."""

    columns: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    scopes: list[str] | None = None

    def change(self, name: str, old: Any, new: Any, /, **columns: Any) -> None:
        if old != new:
            self.changes[name] = {"old": old, "new": new}
            self.columns.update(columns)


async def update_key(
    session: AsyncSession,
    caller: Caller,
    data: KeyUpdate,
    *,
    catalogue: ScopeCatalogue,
    broadcast: KeyChangeBroadcast,
) -> ApiKey | list[UserError]:
    """Change what ``data`` gives; an absent field is unchanged. Managing a key needs its power
    (app/keys/power.py); its scopes can only become scopes the caller holds."""
    api_key = await get_key(session, caller, data.key_id)
    if api_key is None:
        return [not_found(data.key_id)]
    refusal = await management_refusal(session, caller, api_key, "update")
    if refusal is not None:
        return [refusal]
    status = api_key.status_at(utcnow())
    if status in (KeyStatus.REVOKED, KeyStatus.SUPERSEDED):
        return [
            UserError(
                UserErrorCode.INVALID_INPUT,
                "id",
                f"Key '{api_key.name}' ({api_key.hint}) is {status.value.lower()} and cannot be "
                "changed (nor enabled again); create a new key instead.",
            )
        ]
    plan = _Plan()
    errors = _plan_identity(plan, api_key, data, caller, catalogue) + _plan_controls(
        plan, api_key, data
    )
    if errors:
        return errors
    if "name" in plan.changes and await live_name_exists(
        session, caller.organization_id, plan.columns["name"], other_than=api_key.id
    ):
        return [name_taken(plan.columns["name"])]
    if not plan.changes:
        return api_key
    return await _apply(session, caller, api_key, plan, broadcast)


def _plan_identity(
    plan: _Plan, key: ApiKey, data: KeyUpdate, caller: Caller, catalogue: ScopeCatalogue
) -> list[UserError]:
    """Name, scopes and rate limit: what creation checks, by the same rules."""
    errors: list[UserError] = []
    if data.name is not UNCHANGED:
        name = (data.name or "").strip()
        error = name_error(name)
        if error is not None:
            errors.append(error)
        else:
            plan.change("name", key.name, name, name=name, name_key=name_key(name))
    if data.scopes is not UNCHANGED:
        scopes = sorted(set(data.scopes or ()))
        error = scopes_error(scopes, caller, catalogue)
        if error is not None:
            errors.append(error)
        elif scopes != sorted(key.scopes):
            plan.change("scopes", sorted(key.scopes), scopes, scopes_text=" ".join(scopes))
            plan.scopes = scopes
    if data.rate_limit is not UNCHANGED:
        limit = data.rate_limit
        error = rate_limit_error(limit)
        if error is not None:
            errors.append(error)
        else:
            old = _rate_limit(key)
            plan.change(
                "rateLimit",
                None if old is None else old.as_json(),
                None if limit is None else limit.as_json(),
                rate_limit_requests=None if limit is None else limit.requests,
                rate_limit_per_seconds=None if limit is None else limit.per_seconds,
            )
    return errors


def _plan_controls(plan: _Plan, key: ApiKey, data: KeyUpdate) -> list[UserError]:
    """Metadata, allowlist, credits and enabled."""
    errors: list[UserError] = []
    if data.meta is not UNCHANGED:
        meta = check_meta(data.meta)
        if isinstance(meta, UserError):
            errors.append(meta)
        else:
            plan.change("meta", _json(key.meta), data.meta, meta=meta)
    if data.ip_allowlist is not UNCHANGED:
        allowlist = check_ip_allowlist(data.ip_allowlist)
        if isinstance(allowlist, UserError):
            errors.append(allowlist)
        else:
            plan.change(
                "ipAllowlist",
                _entries(key.ip_allowlist),
                _entries(allowlist),
                ip_allowlist=allowlist,
            )
    if data.credits is not UNCHANGED:
        error = credits_error(data.credits)
        if error is not None:
            errors.append(error)
        else:
            _plan_credits(plan, key, data.credits)
    if data.enabled is not UNCHANGED:
        if data.enabled is None:
            errors.append(
                UserError(UserErrorCode.INVALID_INPUT, "enabled", "enabled cannot be null.")
            )
        else:
            plan.change("enabled", key.enabled, data.enabled, enabled=data.enabled)
    return errors


def _plan_credits(plan: _Plan, key: ApiKey, credits: Credits | None) -> None:
    """Setting credits replaces the balance (and its period) on every store: a new version."""
    old = _credits(key)
    new = None if credits is None else credits.as_json()
    if credits is None:
        columns: dict[str, Any] = dict.fromkeys(
            (
                "credits_remaining",
                "credits_refill_amount",
                "credits_refill_interval",
                "credits_period",
            )
        )
    else:
        refill = credits.refill
        interval = None if refill is None else refill.interval
        columns = {
            "credits_remaining": credits.remaining,
            "credits_refill_amount": None if refill is None else refill.amount,
            "credits_refill_interval": None if interval is None else interval.value,
            "credits_period": refill_period(interval, utcnow()),
        }
    # Given at all, even with the same figures, it is a reset of the balance: a spend made
    # since the key was read must not survive it.
    plan.changes["credits"] = {"old": old, "new": new}
    plan.columns.update(columns, credits_version=key.credits_version + 1)


async def _apply(
    session: AsyncSession,
    caller: Caller,
    api_key: ApiKey,
    plan: _Plan,
    broadcast: KeyChangeBroadcast,
) -> ApiKey | list[UserError]:
    try:
        # A savepoint: a name taken meanwhile by a concurrent request undoes only this.
        async with session.begin_nested():
            for column, value in plan.columns.items():
                setattr(api_key, column, value)
            session.add(api_key)
            if plan.scopes is not None:
                await replace_scope_rows(session, api_key)
            await session.flush()
    except IntegrityError:
        return [name_taken(str(plan.columns["name"]))]
    record_event(
        session,
        caller,
        AuditAction.KEY_UPDATED,
        api_key_id=api_key.id,
        details={"name": api_key.name, "hint": api_key.hint, "changes": plan.changes},
    )
    await session.flush()
    announce_after_commit(session, broadcast, api_key.id)
    return api_key


def _rate_limit(key: ApiKey) -> RateLimit | None:
    if key.rate_limit_requests is None or key.rate_limit_per_seconds is None:
        return None
    return RateLimit(key.rate_limit_requests, key.rate_limit_per_seconds)


def _credits(key: ApiKey) -> dict[str, Any] | None:
    if key.credits_remaining is None:
        return None
    refill = None
    if key.credits_refill_amount is not None and key.credits_refill_interval is not None:
        refill = {"amount": key.credits_refill_amount, "interval": key.credits_refill_interval}
    return {"remaining": key.credits_remaining, "refill": refill}


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _entries(allowlist: str | None) -> list[str]:
    return [] if allowlist is None else allowlist.split()
