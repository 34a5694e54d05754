"""GraphQL for the caller's organization."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app.graphql.context import Info
from app.graphql.permissions import needs
from app.graphql.types import UserErrorType, user_errors
from app.keys import repository as keys_repository
from app.keys.scopes import READ_API_KEYS, WRITE_API_KEYS
from app.kit.pagination import COUNT_LIMIT
from app.models.organizations import LeakedKeyAction
from app.models.organizations import Organization as OrganizationRow
from app.organizations import service
from app.organizations.operator import OrganizationStatus, status_of


@strawberry.type(
    description=f"The organization's keys by status, each counted up to {COUNT_LIMIT:,}: "
    f'{COUNT_LIMIT:,} means {COUNT_LIMIT:,} or more (show "{COUNT_LIMIT:,}+"), so that counting '
    "costs the same for a million keys as for a thousand."
)
class KeyCounts:
    total: int
    active: int
    revoked: int
    expired: int
    superseded: int


strawberry.enum(
    LeakedKeyAction,
    name="LeakedKeyAction",
    description="What a secret scanner's report of a key found in public does to it.",
)


@strawberry.type(description="Rules for the organization's keys (GitHub-style).")
class KeyPolicy:
    single_active_key: bool = strawberry.field(
        description="Creating a key supersedes the organization's other active keys (but the "
        "caller's own) after supersedeGraceHours."
    )
    supersede_grace_hours: int
    max_expires_in_days: int | None = strawberry.field(
        description="Keys may live at most this many days; null: no bound."
    )
    require_expiry: bool
    leaked_key_action: LeakedKeyAction = strawberry.field(
        description="REVOKE (the default): a key reported found in public is revoked at once; "
        "NOTIFY: it is only flagged (leakedAt, the key.leaked event, the audit log)."
    )

    @classmethod
    def of(cls, row: OrganizationRow) -> KeyPolicy:
        return cls(
            single_active_key=row.single_active_key,
            supersede_grace_hours=row.supersede_grace_hours,
            max_expires_in_days=row.max_expires_in_days,
            require_expiry=row.require_expiry,
            leaked_key_action=LeakedKeyAction(row.leaked_key_action),
        )


# The domain enum itself is the GraphQL enum.
strawberry.enum(OrganizationStatus, name="OrganizationStatus")


@strawberry.type(name="Organization")
class OrganizationType:
    id: strawberry.ID
    name: str
    created_at: datetime
    key_policy: KeyPolicy
    external_id: str | None = strawberry.field(
        description="The platform's own id for this customer (createOrganization); null for "
        "organizations made on the server."
    )
    status: OrganizationStatus = strawberry.field(
        description="SUSPENDED: every key of the organization is refused."
    )
    suspended_at: datetime | None
    suspension_reason: str | None = strawberry.field(
        description="What the operator gave as the reason when suspending."
    )

    @strawberry.field(extensions=needs(READ_API_KEYS), description="How many keys, by status.")
    async def key_counts(self, info: Info) -> KeyCounts:
        async with info.context.db() as session:
            counts = await keys_repository.count_keys(session, info.context.caller)
        return KeyCounts(
            total=counts.total,
            active=counts.active,
            revoked=counts.revoked,
            expired=counts.expired,
            superseded=counts.superseded,
        )

    @classmethod
    def of(cls, row: OrganizationRow) -> OrganizationType:
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            created_at=row.created_at,
            key_policy=KeyPolicy.of(row),
            external_id=row.external_id,
            status=status_of(row),
            suspended_at=row.suspended_at,
            suspension_reason=row.suspension_reason,
        )


@strawberry.type
class Query:
    @strawberry.field(description="The organization your key belongs to.")
    async def organization(self, info: Info) -> OrganizationType:
        async with info.context.db() as session:
            row = await service.get_organization(session, info.context.caller)
        # A key outlives nothing: its organization row exists as long as the key does.
        assert row is not None
        return OrganizationType.of(row)


@strawberry.input
class UpdateKeyPolicyInput:
    """Omitted fields keep their value."""

    single_active_key: bool | None = strawberry.UNSET
    supersede_grace_hours: int | None = strawberry.field(
        default=strawberry.UNSET, description="0 to 720."
    )
    max_expires_in_days: int | None = strawberry.field(
        default=strawberry.UNSET, description="1 to 3650; null removes the bound."
    )
    require_expiry: bool | None = strawberry.UNSET
    leaked_key_action: LeakedKeyAction | None = strawberry.UNSET


@strawberry.type
class UpdateKeyPolicyPayload:
    organization: OrganizationType | None = None
    keys_to_supersede: int = strawberry.field(
        default=0,
        description="With singleActiveKey on: how many active keys the next created key will "
        f"supersede, counted up to {COUNT_LIMIT:,} ({COUNT_LIMIT:,} means that many or more). "
        "Turning the policy on supersedes nothing by itself.",
    )
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


def _given(value: object) -> bool:
    return value is not strawberry.UNSET and value is not None


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=needs(WRITE_API_KEYS), description="Change the organization's key policy."
    )
    async def update_key_policy(
        self,
        info: Info,
        input: UpdateKeyPolicyInput,
    ) -> UpdateKeyPolicyPayload:
        async with info.context.db() as session:
            result = await service.update_key_policy(
                session,
                info.context.caller,
                service.PolicyUpdate(
                    single_active_key=(
                        input.single_active_key if _given(input.single_active_key) else None
                    ),
                    supersede_grace_hours=(
                        input.supersede_grace_hours if _given(input.supersede_grace_hours) else None
                    ),
                    max_expires_in_days=(
                        input.max_expires_in_days if _given(input.max_expires_in_days) else None
                    ),
                    clear_max_expires_in_days=input.max_expires_in_days is None,
                    require_expiry=input.require_expiry if _given(input.require_expiry) else None,
                    leaked_key_action=(
                        input.leaked_key_action if _given(input.leaked_key_action) else None
                    ),
                ),
            )
        if isinstance(result, list):
            return UpdateKeyPolicyPayload(user_errors=user_errors("updateKeyPolicy", result))
        return UpdateKeyPolicyPayload(
            organization=OrganizationType.of(result.organization),
            keys_to_supersede=result.keys_to_supersede,
        )
