"""The operator's GraphQL beside organizations (operator keys only): usage by organization for
billing, the operator audit log, and dashboard sign-in links."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from app.graphql.context import Info
from app.graphql.permissions import needs_operator
from app.graphql.types import Connection, UserErrorType, user_errors
from app.kit.errors import UserError
from app.kit.pagination import DEFAULT_PAGE_SIZE, Cursor, check_page_size
from app.models.operators import OperatorAction, OperatorAuditEvent
from app.operators import audit, links, usage
from app.organizations import loaders
from app.organizations.graphql import OrganizationType

# The domain enum itself is the GraphQL enum.
strawberry.enum(OperatorAction, name="OperatorAction")


async def _organization(info: Info, organization_id: str | None) -> OrganizationType | None:
    if organization_id is None:
        return None
    row = await info.context.loader(loaders.organizations).load(organization_id)
    return None if row is None else OrganizationType.of(row)


@strawberry.type(description="Who acted: an operator key (null id: the CLI on the server).")
class OperatorActor:
    id: strawberry.ID | None
    hint: str | None


@strawberry.type(name="OperatorAuditEvent")
class OperatorAuditEventType:
    id: strawberry.ID
    action: OperatorAction
    occurred_at: datetime
    actor: OperatorActor
    details: JSON = strawberry.field(description="What was done. Never a secret.")
    organization_id: strawberry.Private[str | None]

    @strawberry.field(description="The organization the action concerns, if any.")
    async def organization(self, info: Info) -> OrganizationType | None:
        return await _organization(info, self.organization_id)

    @classmethod
    def of(cls, row: OperatorAuditEvent) -> OperatorAuditEventType:
        return cls(
            id=strawberry.ID(row.id),
            action=OperatorAction(row.action),
            occurred_at=row.occurred_at,
            actor=OperatorActor(
                id=None if row.actor_key_id is None else strawberry.ID(row.actor_key_id),
                hint=row.actor_hint,
            ),
            details=json.loads(row.details),
            organization_id=row.organization_id,
        )


@strawberry.input
class OperatorAuditLogFilter:
    action: OperatorAction | None = None
    organization_id: strawberry.ID | None = None


@strawberry.type(name="OrganizationUsage", description="An organization's uses in a period.")
class OrganizationUsageType:
    organization_id: strawberry.Private[str]
    requests: int
    valid: int
    rejected: int

    @strawberry.field
    async def organization(self, info: Info) -> OrganizationType | None:
        return await _organization(info, self.organization_id)

    @classmethod
    def of(cls, row: usage.OrganizationCounts) -> OrganizationUsageType:
        counts = row.counts
        return cls(
            organization_id=row.organization_id,
            requests=counts.requests,
            valid=counts.valid,
            rejected=counts.rejected,
        )


@strawberry.input
class CreateDashboardLinkInput:
    organization_id: strawberry.ID
    expires_in_minutes: int = strawberry.field(
        default=links.LINK_MINUTES_DEFAULT,
        description=f"How long the link works, 1 to {links.LINK_MINUTES_MAX} minutes (once).",
    )


@strawberry.type
class CreateDashboardLinkPayload:
    url: str | None = strawberry.field(
        default=None,
        description="Works once: it signs a person into the organization's dashboard with "
        "the admin's scopes for a few hours, without a key. Send it to that person only.",
    )
    expires_at: datetime | None = None
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    @strawberry.field(
        extensions=needs_operator(),
        description="Per organization, its requests, valid and rejected uses in [from, to), "
        "largest first, read from the hourly and daily rollups: exact, for billing. 'from' "
        "and 'to' fall on whole minutes (UTC). Organizations without uses are left out "
        "(operator keys only).",
    )
    async def organizations_usage(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[OrganizationUsageType]:
        check_page_size(first)
        position = None if after is None else usage.UsageCursor.decode(after)
        period = usage.checked_period(info.context.runtime.settings, from_, to)
        async with info.context.db() as session:
            rows = await usage.usage_by_organization(session, period, first=first, after=position)

        async def count() -> int:
            async with info.context.db() as session:
                return await usage.count_organizations_with_usage(session, period)

        return Connection.of(
            rows[:first],
            OrganizationUsageType.of,
            lambda row: usage.UsageCursor(row.counts.requests, row.organization_id),
            count=count,
            has_next_page=len(rows) > first,
            after=position,
        )

    @strawberry.field(
        extensions=needs_operator(),
        description="Every operator action, newest first (operator keys only).",
    )
    async def operator_audit_log(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        filter: Annotated[OperatorAuditLogFilter | None, strawberry.argument()] = None,
    ) -> Connection[OperatorAuditEventType]:
        check_page_size(first)
        cursor = None if after is None else Cursor.decode(after)
        wanted = audit.OperatorAuditFilter(
            action=None if filter is None else filter.action,
            organization_id=None
            if filter is None or filter.organization_id is None
            else str(filter.organization_id),
        )
        async with info.context.db() as session:
            page = await audit.list_events(session, wanted, first=first, after=cursor)

        async def count() -> int:
            async with info.context.db() as session:
                return await audit.count_events(session, wanted)

        return Connection.of(
            page.events,
            OperatorAuditEventType.of,
            lambda row: Cursor(row.occurred_at, row.id),
            count=count,
            has_next_page=page.has_next_page,
            after=cursor,
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=needs_operator(),
        description="A one-time link that signs a person into the organization's dashboard "
        "(operator keys only).",
    )
    async def create_dashboard_link(
        self, info: Info, input: CreateDashboardLinkInput
    ) -> CreateDashboardLinkPayload:
        operator = info.context.operator
        assert operator is not None, "needs_operator() let only operators in"
        runtime = info.context.runtime
        async with info.context.db() as session:
            result = await links.create_dashboard_link(
                session,
                operator,
                str(input.organization_id),
                input.expires_in_minutes,
                key_prefix=runtime.settings.key_prefix,
            )
        if isinstance(result, UserError):
            return CreateDashboardLinkPayload(
                user_errors=user_errors("createDashboardLink", [result])
            )
        base = runtime.settings.public_url or str(info.context.request.base_url)
        return CreateDashboardLinkPayload(
            url=f"{base.rstrip('/')}{links.LINK_PATH}/{result.token}",
            expires_at=result.link.expires_at,
        )
