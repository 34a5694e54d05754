"""What the platform's operator does with organizations: list them, create one for each new
customer (idempotent on the platform's own id), suspend and resume them.

Each action writes the operator audit log, and the organization's own log where it concerns it
(suspension); a suspension or resumption drops the organization's keys from every instance's
verification cache once committed, through the revocation broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import and_, func, literal, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller, Operator
from app.keys.broadcast import KeyChangeBroadcast, announce_organization_after_commit
from app.keys.scopes import ScopeCatalogue
from app.kit.boundary import excerpt, value_problem
from app.kit.db import execute_core
from app.kit.errors import UserError, UserErrorCode
from app.kit.ids import is_id_of
from app.kit.pagination import COUNT_LIMIT, Cursor
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.operators import OperatorAction, record_operator_event
from app.models.organizations import Organization
from app.organizations.service import OrganizationCreated, already_exists, create_organization

EXTERNAL_ID_MAX_LENGTH = 128
REASON_MAX_LENGTH = 500


class OrganizationStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"


def status_of(organization: Organization) -> OrganizationStatus:
    if organization.suspended_at is None:
        return OrganizationStatus.ACTIVE
    return OrganizationStatus.SUSPENDED


@dataclass(frozen=True, slots=True)
class OrganizationFilter:
    status: OrganizationStatus | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class OrganizationPage:
    organizations: list[Organization]
    has_next_page: bool


def _conditions(organization_filter: OrganizationFilter) -> list[Any]:
    conditions: list[Any] = []
    if organization_filter.status is OrganizationStatus.SUSPENDED:
        conditions.append(col(Organization.suspended_at).is_not(None))
    elif organization_filter.status is OrganizationStatus.ACTIVE:
        conditions.append(col(Organization.suspended_at).is_(None))
    if organization_filter.external_id is not None:
        conditions.append(col(Organization.external_id) == organization_filter.external_id)
    return conditions


async def list_organizations(
    session: AsyncSession,
    organization_filter: OrganizationFilter,
    *,
    first: int,
    after: Cursor | None = None,
) -> OrganizationPage:
    """A page of every organization of the deployment, newest first."""
    conditions = _conditions(organization_filter)
    if after is not None:
        conditions.append(
            or_(
                col(Organization.created_at) < after.created_at,
                and_(
                    col(Organization.created_at) == after.created_at,
                    col(Organization.id) < after.id,
                ),
            )
        )
    statement = (
        select(Organization)
        .where(*conditions)
        .order_by(col(Organization.created_at).desc(), col(Organization.id).desc())
        .limit(first + 1)
    )
    rows = list((await session.exec(statement)).all())
    return OrganizationPage(rows[:first], has_next_page=len(rows) > first)


async def count_organizations(
    session: AsyncSession, organization_filter: OrganizationFilter
) -> int:
    """How many match, up to COUNT_LIMIT, like every count of a list."""
    matching = (
        sa_select(literal(1))
        .select_from(Organization)
        .where(*_conditions(organization_filter))
        .limit(COUNT_LIMIT)
    )
    statement = sa_select(func.count()).select_from(matching.subquery())
    count: int = (await execute_core(session, statement)).scalar_one()
    return count


def external_id_problem(external_id: str) -> UserError | None:
    """The platform's id for its customer: 1 to 128 characters, no spaces or control
    characters (it is compared exactly, so nothing is trimmed)."""
    problem = value_problem(external_id, max_length=EXTERNAL_ID_MAX_LENGTH)
    if problem is None and (not external_id or any(ch.isspace() for ch in external_id)):
        problem = "is empty or holds a space"
    if problem is None:
        return None
    return UserError(
        UserErrorCode.INVALID_INPUT,
        "externalId",
        f"externalId has 1 to {EXTERNAL_ID_MAX_LENGTH} characters without spaces or control "
        f"characters; {excerpt(external_id)!r} {problem}.",
    )


@dataclass(frozen=True, slots=True)
class Existing:
    """A create that found the organization its externalId names (ALREADY_EXISTS)."""

    organization: Organization
    error: UserError


async def create_for_platform(
    session: AsyncSession,
    operator: Operator,
    name: str,
    external_id: str,
    *,
    catalogue: ScopeCatalogue,
    key_prefix: str,
    broadcast: KeyChangeBroadcast,
) -> OrganizationCreated | Existing | UserError:
    """A new customer's organization and its admin key; a retry with the same ``external_id``
    finds the organization it made, and never makes a second admin secret."""
    problem = external_id_problem(external_id)
    if problem is not None:
        return problem
    found = await find_by_external_id(session, external_id)
    if found is not None:
        return Existing(found, already_exists(external_id))
    created = await create_organization(
        session,
        name,
        catalogue=catalogue,
        key_prefix=key_prefix,
        broadcast=broadcast,
        external_id=external_id,
    )
    if isinstance(created, UserError):
        if created.code != UserErrorCode.ALREADY_EXISTS:
            return created
        # A concurrent create with the same externalId committed first.
        raced = await find_by_external_id(session, external_id)
        return created if raced is None else Existing(raced, created)
    record_operator_event(
        session,
        operator,
        OperatorAction.ORGANIZATION_CREATED,
        organization_id=created.organization.id,
        details={"name": created.organization.name, "externalId": external_id},
    )
    await session.flush()
    return created


async def find_by_external_id(session: AsyncSession, external_id: str) -> Organization | None:
    statement = select(Organization).where(col(Organization.external_id) == external_id)
    return (await session.exec(statement)).first()


async def find_organization(session: AsyncSession, organization_id: str) -> Organization | None:
    if not is_id_of("org", organization_id):
        return None  # not shaped like an id: no database question needed to say so
    return await session.get(Organization, organization_id)


async def find_organizations(
    session: AsyncSession, organization_ids: list[str]
) -> dict[str, Organization]:
    statement = select(Organization).where(col(Organization.id).in_(organization_ids))
    return {row.id: row for row in (await session.exec(statement)).all()}


def not_found(organization_id: str) -> UserError:
    return UserError(
        UserErrorCode.NOT_FOUND, "id", f"No organization {excerpt(organization_id)!r}."
    )


def _acting(operator: Operator, organization_id: str) -> Caller:
    """The operator as the organization's audit log names it: its operator key."""
    return Caller(organization_id, frozenset(), operator.key_id, operator.key_hint)


async def suspend_organization(
    session: AsyncSession,
    operator: Operator,
    organization_id: str,
    reason: str,
    *,
    broadcast: KeyChangeBroadcast,
) -> Organization | UserError:
    """Every key of the organization is refused (ORGANIZATION_SUSPENDED) from the next request
    on every instance. Suspending a suspended organization changes nothing."""
    reason = reason.strip()
    problem = value_problem(reason, max_length=REASON_MAX_LENGTH)
    if not reason or problem is not None:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "reason",
            f"A suspension's reason has 1 to {REASON_MAX_LENGTH} characters"
            + ("." if problem is None else f"; {excerpt(reason)!r} {problem}."),
        )
    organization = await find_organization(session, organization_id)
    if organization is None:
        return not_found(organization_id)
    if organization.suspended_at is not None:
        return organization
    organization.suspended_at = utcnow()
    organization.suspension_reason = reason
    session.add(organization)
    details = {"reason": reason}
    return await _standing_changed(session, operator, organization, "SUSPENDED", details, broadcast)


async def resume_organization(
    session: AsyncSession,
    operator: Operator,
    organization_id: str,
    *,
    broadcast: KeyChangeBroadcast,
) -> Organization | UserError:
    """The organization's keys work again (those not revoked or expired meanwhile). Resuming
    an active organization changes nothing."""
    organization = await find_organization(session, organization_id)
    if organization is None:
        return not_found(organization_id)
    if organization.suspended_at is None:
        return organization
    details = {"suspendedAt": organization.suspended_at, "reason": organization.suspension_reason}
    organization.suspended_at = None
    organization.suspension_reason = None
    session.add(organization)
    return await _standing_changed(session, operator, organization, "RESUMED", details, broadcast)


async def _standing_changed(
    session: AsyncSession,
    operator: Operator,
    organization: Organization,
    change: Literal["SUSPENDED", "RESUMED"],
    details: dict[str, Any],
    broadcast: KeyChangeBroadcast,
) -> Organization:
    """Record a suspension or resumption in both audit logs, and have every instance drop the
    organization's keys from its cache once it is committed."""
    action = f"ORGANIZATION_{change}"
    record_operator_event(
        session, operator, OperatorAction(action), organization_id=organization.id, details=details
    )
    record_event(session, _acting(operator, organization.id), AuditAction(action), details=details)
    await session.flush()
    announce_organization_after_commit(session, broadcast, organization.id)
    return organization
