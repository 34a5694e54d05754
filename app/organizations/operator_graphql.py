"""The operator's GraphQL for organizations (operator keys only): the list of every
organization, createOrganization, suspendOrganization and resumeOrganization."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.auth.principal import Operator
from app.graphql.context import Info
from app.graphql.permissions import needs_operator
from app.graphql.types import Connection, UserErrorType, user_errors
from app.keys.graphql import ApiKeyType
from app.kit.errors import UserError
from app.kit.pagination import DEFAULT_PAGE_SIZE, Cursor, check_page_size
from app.models.organizations import Organization
from app.organizations import operator as service
from app.organizations.graphql import OrganizationType
from app.organizations.operator import OrganizationStatus
from app.organizations.service import OrganizationCreated


def _operator(info: Info) -> Operator:
    operator = info.context.operator
    assert operator is not None, "needs_operator() let only operators in"
    return operator


@strawberry.input
class OrganizationFilter:
    status: OrganizationStatus | None = None
    external_id: str | None = None


@strawberry.input
class CreateOrganizationInput:
    name: str = strawberry.field(description="1 to 128 characters.")
    external_id: str = strawberry.field(
        description="The platform's own id for this customer, unique per deployment: a retry "
        "with the same externalId answers with the same organization (ALREADY_EXISTS), never "
        "a second admin secret. 1 to 128 characters, no spaces."
    )


@strawberry.type
class CreateOrganizationPayload:
    organization: OrganizationType | None = None
    admin_key: ApiKeyType | None = strawberry.field(
        default=None, description="The organization's first key, holding every scope."
    )
    secret: str | None = strawberry.field(
        default=None,
        description="The admin key's secret: shown once, never again (null on a retry).",
    )
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


@strawberry.input
class SuspendOrganizationInput:
    id: strawberry.ID
    reason: str = strawberry.field(
        description="1 to 500 characters, kept in both audit logs. Never shown to key holders."
    )


@strawberry.type
class OrganizationPayload:
    organization: OrganizationType | None = None
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


def _payload(mutation: str, result: object) -> OrganizationPayload:
    if isinstance(result, UserError):
        return OrganizationPayload(user_errors=user_errors(mutation, [result]))
    assert isinstance(result, Organization)
    return OrganizationPayload(organization=OrganizationType.of(result))


@strawberry.type
class Query:
    @strawberry.field(
        extensions=needs_operator(),
        description="Every organization of the deployment, newest first (operator keys only).",
    )
    async def organizations(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        filter: Annotated[OrganizationFilter | None, strawberry.argument()] = None,
    ) -> Connection[OrganizationType]:
        check_page_size(first)
        cursor = None if after is None else Cursor.decode(after)
        wanted = service.OrganizationFilter(
            status=None if filter is None else filter.status,
            external_id=None if filter is None else filter.external_id,
        )
        async with info.context.db() as session:
            page = await service.list_organizations(session, wanted, first=first, after=cursor)

        async def count() -> int:
            async with info.context.db() as session:
                return await service.count_organizations(session, wanted)

        return Connection.of(
            page.organizations,
            OrganizationType.of,
            lambda row: Cursor(row.created_at, row.id),
            count=count,
            has_next_page=page.has_next_page,
            after=cursor,
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=needs_operator(),
        description="An organization for a new customer, with its admin key (operator keys only).",
    )
    async def create_organization(
        self, info: Info, input: CreateOrganizationInput
    ) -> CreateOrganizationPayload:
        runtime = info.context.runtime
        async with info.context.db() as session:
            result = await service.create_for_platform(
                session,
                _operator(info),
                input.name,
                input.external_id,
                catalogue=runtime.catalogue,
                key_prefix=runtime.settings.key_prefix,
                broadcast=runtime.broadcast,
            )
        if isinstance(result, UserError):
            return CreateOrganizationPayload(
                user_errors=user_errors("createOrganization", [result])
            )
        if isinstance(result, service.Existing):
            return CreateOrganizationPayload(
                organization=OrganizationType.of(result.organization),
                user_errors=user_errors("createOrganization", [result.error]),
            )
        assert isinstance(result, OrganizationCreated)
        return CreateOrganizationPayload(
            organization=OrganizationType.of(result.organization),
            admin_key=ApiKeyType.of(result.admin_key.api_key, info.context),
            secret=result.admin_key.secret,
        )

    @strawberry.mutation(
        extensions=needs_operator(),
        description="Refuse every key of the organization (ORGANIZATION_SUSPENDED) from the "
        "next request, on every instance, until it is resumed (operator keys only).",
    )
    async def suspend_organization(
        self, info: Info, input: SuspendOrganizationInput
    ) -> OrganizationPayload:
        async with info.context.db() as session:
            result = await service.suspend_organization(
                session,
                _operator(info),
                str(input.id),
                input.reason,
                broadcast=info.context.runtime.broadcast,
            )
        return _payload("suspendOrganization", result)

    @strawberry.mutation(
        extensions=needs_operator(),
        description="Let the organization's keys work again (operator keys only).",
    )
    async def resume_organization(self, info: Info, id: strawberry.ID) -> OrganizationPayload:
        async with info.context.db() as session:
            result = await service.resume_organization(
                session, _operator(info), str(id), broadcast=info.context.runtime.broadcast
            )
        return _payload("resumeOrganization", result)
