"""Dashboard sign-in links: the operator makes a one-time link for an organization; the person
who opens it gets a short-lived dashboard credential (the organization admin's scopes, for
``/graphql`` only) without ever handling a key.

The link's token and the credential are stored as SHA-256 digests only. A link is used by a
POST from the page it opens (``/dashboard/link/<token>``), never by the GET itself, so a mail
scanner or chat preview that fetches the URL does not spend it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller, Operator
from app.auth.secret import (
    dashboard_prefix,
    format_problem,
    generate_secret,
    hash_secret,
    hint_for,
    link_prefix,
)
from app.kit.db import execute_core
from app.kit.errors import UserError, UserErrorCode
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.operators import (
    DashboardCredential,
    DashboardLink,
    OperatorAction,
    record_operator_event,
)
from app.models.organizations import Organization
from app.organizations.operator import find_organization

LINK_PATH = "/dashboard/link"
LINK_MINUTES_DEFAULT = 15
LINK_MINUTES_MAX = 60


@dataclass(frozen=True, slots=True)
class LinkCreated:
    link: DashboardLink
    token: str


async def create_dashboard_link(
    session: AsyncSession,
    operator: Operator,
    organization_id: str,
    expires_in_minutes: int,
    *,
    key_prefix: str,
) -> LinkCreated | UserError:
    if not 1 <= expires_in_minutes <= LINK_MINUTES_MAX:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "expiresInMinutes",
            f"expiresInMinutes must be between 1 and {LINK_MINUTES_MAX}, got {expires_in_minutes}.",
        )
    organization = await find_organization(session, organization_id)
    if organization is None:
        return UserError(UserErrorCode.NOT_FOUND, "organizationId", "No such organization.")
    if organization.suspended_at is not None:
        return UserError(
            UserErrorCode.FORBIDDEN,
            "organizationId",
            "The organization is suspended: nobody can sign in to it until it is resumed.",
        )
    prefix = link_prefix(key_prefix)
    token = generate_secret(prefix)
    now = utcnow()
    link = DashboardLink(
        organization_id=organization.id,
        token_hash=hash_secret(token),
        created_at=now,
        expires_at=now + timedelta(minutes=expires_in_minutes),
        operator_key_id=operator.key_id,
        operator_key_hint=operator.key_hint,
    )
    session.add(link)
    record_operator_event(
        session,
        operator,
        OperatorAction.DASHBOARD_LINK_CREATED,
        organization_id=organization.id,
        details={"linkId": link.id, "expiresAt": link.expires_at},
    )
    await session.flush()
    return LinkCreated(link, token)


@dataclass(frozen=True, slots=True)
class SignedIn:
    credential: DashboardCredential
    secret: str


@dataclass(frozen=True, slots=True)
class LinkRefusal:
    """Why a link did not sign anyone in: a code, a message and a hint, and the HTTP status."""

    status: int
    code: str
    message: str
    hint: str


_ASK_AGAIN = "Ask your provider for a new sign-in link."


async def use_link(
    session: AsyncSession, token: str, *, key_prefix: str, sign_in_hours: int
) -> SignedIn | LinkRefusal:
    """Spend the link (once, whatever happens concurrently) for a dashboard credential."""
    if format_problem(token, link_prefix(key_prefix)) is not None:
        return LinkRefusal(404, "UNKNOWN", "This is not a sign-in link.", _ASK_AGAIN)
    digest = hash_secret(token)
    found = (
        await session.exec(
            select(DashboardLink, Organization)
            .join(Organization, col(Organization.id) == col(DashboardLink.organization_id))
            .where(col(DashboardLink.token_hash) == digest)
        )
    ).first()
    if found is None:
        return LinkRefusal(404, "UNKNOWN", "This sign-in link does not exist.", _ASK_AGAIN)
    link, organization = found
    now = utcnow()
    if link.used_at is not None:
        return _used()
    if link.expires_at <= now:
        return LinkRefusal(410, "EXPIRED", "This sign-in link has expired.", _ASK_AGAIN)
    if organization.suspended_at is not None:
        return LinkRefusal(
            403,
            "ORGANIZATION_SUSPENDED",
            "This organization is suspended.",
            "Nobody can sign in to it until the provider resumes it.",
        )
    # One statement decides who spends the link: of two concurrent uses, one updates the row.
    spent = await execute_core(
        session,
        update(DashboardLink)
        .where(col(DashboardLink.id) == link.id, col(DashboardLink.used_at).is_(None))
        .values(used_at=now),
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        return _used()
    return _sign_in(session, link, key_prefix=key_prefix, hours=sign_in_hours)


def _used() -> LinkRefusal:
    return LinkRefusal(
        410, "USED", "This sign-in link was already used; a link works once.", _ASK_AGAIN
    )


def _sign_in(
    session: AsyncSession, link: DashboardLink, *, key_prefix: str, hours: int
) -> SignedIn:
    prefix = dashboard_prefix(key_prefix)
    secret = generate_secret(prefix)
    now = utcnow()
    credential = DashboardCredential(
        organization_id=link.organization_id,
        credential_hash=hash_secret(secret),
        hint=hint_for(secret, prefix),
        created_at=now,
        expires_at=now + timedelta(hours=hours),
        link_id=link.id,
        operator_key_id=link.operator_key_id,
        operator_key_hint=link.operator_key_hint,
    )
    session.add(credential)
    details = {"linkId": link.id, "signedInUntil": credential.expires_at}
    operator = (
        None
        if link.operator_key_id is None or link.operator_key_hint is None
        else Operator(link.operator_key_id, link.operator_key_hint)
    )
    # The organization's log names the operator key that made the link as the actor.
    actor = Caller(link.organization_id, frozenset(), link.operator_key_id, link.operator_key_hint)
    record_event(session, actor, AuditAction.DASHBOARD_SIGNED_IN, details=details)
    record_operator_event(
        session,
        operator,
        OperatorAction.DASHBOARD_LINK_USED,
        organization_id=link.organization_id,
        details=details,
    )
    return SignedIn(credential, secret)
