"""Organizations: created by the operator (CLI), each with its first admin key."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.broadcast import KeyChangeBroadcast
from app.keys.repository import count_supersedable_keys
from app.keys.schemas import (
    EXPIRES_IN_DAYS_MAX,
    GRACE_HOURS_MAX,
    NAME_MAX_LENGTH,
    KeyCreate,
    KeyCreated,
)
from app.keys.scopes import ScopeCatalogue
from app.keys.service import create_key
from app.kit.boundary import excerpt
from app.kit.errors import UserError, UserErrorCode
from app.models.audit import AuditAction, record_event
from app.models.organizations import LeakedKeyAction, Organization

ADMIN_KEY_NAME = "admin"


@dataclass(frozen=True, slots=True)
class OrganizationCreated:
    organization: Organization
    admin_key: KeyCreated


async def create_organization(
    session: AsyncSession,
    name: str,
    *,
    catalogue: ScopeCatalogue,
    key_prefix: str,
    broadcast: KeyChangeBroadcast,
    external_id: str | None = None,
) -> OrganizationCreated | UserError:
    """A new organization and its admin key, holding every scope of the catalogue. With an
    ``external_id`` already taken (a retry, or a race with one), ALREADY_EXISTS."""
    name = name.strip()
    if not name or len(name) > NAME_MAX_LENGTH:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "name",
            f"An organization name has 1 to {NAME_MAX_LENGTH} characters.",
        )
    organization = Organization(name=name, external_id=external_id)
    try:
        # A savepoint: a concurrent create with the same external id wins the unique index,
        # and this one answers as a retry would, without undoing the caller's transaction.
        async with session.begin_nested():
            session.add(organization)
    except IntegrityError:
        return already_exists(external_id or "")
    operator = Caller(organization_id=organization.id, scopes=catalogue.names())
    created = await create_key(
        session,
        operator,
        KeyCreate(name=ADMIN_KEY_NAME, scopes=sorted(catalogue.names())),
        catalogue=catalogue,
        key_prefix=key_prefix,
        broadcast=broadcast,
    )
    assert isinstance(created, KeyCreated), "a new organization has no key names to clash with"
    return OrganizationCreated(organization, created)


def already_exists(external_id: str) -> UserError:
    return UserError(
        UserErrorCode.ALREADY_EXISTS,
        "externalId",
        f"An organization with externalId {excerpt(external_id)!r} already exists: this answers "
        "with it, and without a secret, since its admin key was shown once, when it was "
        "created. To give its admin a way in, use createDashboardLink.",
    )


async def get_organization(session: AsyncSession, caller: Caller) -> Organization | None:
    return await session.get(Organization, caller.organization_id)


@dataclass(frozen=True, slots=True)
class PolicyUpdate:
    """Fields left as None keep their value; ``clear_max_expires_in_days`` removes the bound."""

    single_active_key: bool | None = None
    supersede_grace_hours: int | None = None
    max_expires_in_days: int | None = None
    clear_max_expires_in_days: bool = False
    require_expiry: bool | None = None
    leaked_key_action: LeakedKeyAction | None = None


@dataclass(frozen=True, slots=True)
class PolicyUpdated:
    organization: Organization
    # Under single-active-key: the keys the next created key will supersede (all the active
    # ones but the caller's own). Nothing is superseded by the update itself.
    keys_to_supersede: int


async def update_key_policy(
    session: AsyncSession,
    caller: Caller,
    data: PolicyUpdate,
) -> PolicyUpdated | list[UserError]:
    errors: list[UserError] = []
    hours = data.supersede_grace_hours
    if hours is not None and not 0 <= hours <= GRACE_HOURS_MAX:
        errors.append(
            UserError(
                UserErrorCode.INVALID_INPUT,
                "supersedeGraceHours",
                f"supersedeGraceHours must be between 0 and {GRACE_HOURS_MAX}, got {hours}.",
            )
        )
    days = data.max_expires_in_days
    if days is not None and not 1 <= days <= EXPIRES_IN_DAYS_MAX:
        errors.append(
            UserError(
                UserErrorCode.INVALID_INPUT,
                "maxExpiresInDays",
                f"maxExpiresInDays must be between 1 and {EXPIRES_IN_DAYS_MAX} (or null for no "
                f"bound), got {days}.",
            )
        )
    if errors:
        return errors
    organization = await session.get(Organization, caller.organization_id)
    assert organization is not None, "a caller's organization exists"
    before = _policy_of(organization)
    if data.single_active_key is not None:
        organization.single_active_key = data.single_active_key
    if hours is not None:
        organization.supersede_grace_hours = hours
    if data.clear_max_expires_in_days:
        organization.max_expires_in_days = None
    elif days is not None:
        organization.max_expires_in_days = days
    if data.require_expiry is not None:
        organization.require_expiry = data.require_expiry
    if data.leaked_key_action is not None:
        organization.leaked_key_action = data.leaked_key_action.value
    after = _policy_of(organization)
    if after != before:
        session.add(organization)
        record_event(
            session,
            caller,
            AuditAction.POLICY_UPDATED,
            details={
                "before": {k: v for k, v in before.items() if after[k] != v},
                "after": {k: v for k, v in after.items() if before[k] != v},
            },
        )
        await session.flush()
    to_supersede = 0
    if organization.single_active_key:
        to_supersede = await count_supersedable_keys(session, caller)
    return PolicyUpdated(organization, to_supersede)


def _policy_of(organization: Organization) -> dict[str, object]:
    return {
        "singleActiveKey": organization.single_active_key,
        "supersedeGraceHours": organization.supersede_grace_hours,
        "maxExpiresInDays": organization.max_expires_in_days,
        "requireExpiry": organization.require_expiry,
        "leakedKeyAction": organization.leaked_key_action,
    }
