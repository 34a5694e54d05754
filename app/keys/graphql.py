"""GraphQL for API keys: the keys page, one key, the scope catalogue, create and revoke.

Resolvers read the context, call one service function and map the result; no SQL here.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from app.graphql.context import Context, Info
from app.graphql.permissions import needs, needs_organization_key
from app.graphql.types import Connection, UsageCounts, UserErrorType, selects, user_errors
from app.keys import (
    loaders,
    policy,
    repository,
    revocation,
    rotation,
    schemas,
    service,
    update,
)
from app.keys.credits import next_refill, refill_period
from app.keys.scopes import READ_ANALYTICS, READ_API_KEYS, WRITE_API_KEYS
from app.kit.errors import UserError
from app.kit.pagination import DEFAULT_PAGE_SIZE, Cursor, check_page_size
from app.kit.timeutil import utcnow
from app.models.keys import ApiKey as ApiKeyRow
from app.models.keys import KeyStatus, ListedKey, RefillInterval
from app.models.usage import Granularity

logger = logging.getLogger(__name__)

ApiKeyStatus = strawberry.enum(KeyStatus, name="ApiKeyStatus")
CreditRefillInterval = strawberry.enum(
    RefillInterval,
    name="CreditRefillInterval",
    description="When credits are reset to the refill amount: each day or each month, at "
    "midnight UTC.",
)


@strawberry.enum
class ApiKeyStatusFilter(Enum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    SUPERSEDED = "SUPERSEDED"
    DISABLED = "DISABLED"
    ALL = "ALL"


@strawberry.type(description="A permission a key can hold.")
class Scope:
    name: str
    description: str


@strawberry.type(description="A request budget: at most `requests` per `perSeconds` seconds.")
class RateLimit:
    requests: int
    per_seconds: int
    is_default: bool = strawberry.field(
        description="True when the key has no limit of its own and uses the deployment's."
    )


@strawberry.input
class RateLimitInput:
    requests: int = strawberry.field(description="1 to 1,000,000.")
    per_seconds: int = strawberry.field(description="1 to 86,400.")


@strawberry.type(description="Credits are reset to `amount` at each interval's start (UTC).")
class CreditRefill:
    amount: int
    interval: CreditRefillInterval  # type: ignore[valid-type]


@strawberry.type(description="A usage-limited key's credits: each valid verification spends some.")
class Credits:
    remaining: int = strawberry.field(
        description="What is left, as last written: with Redis, spends reach the database in "
        "batches, a few seconds behind."
    )
    refill: CreditRefill | None
    refill_at: datetime | None = strawberry.field(description="The next refill, if any.")

    @classmethod
    def of(cls, row: ApiKeyRow | ListedKey, now: datetime) -> Credits | None:
        if row.credits_remaining is None:
            return None
        amount, named = row.credits_refill_amount, row.credits_refill_interval
        if amount is None or named is None:
            return cls(remaining=row.credits_remaining, refill=None, refill_at=None)
        interval = RefillInterval(named)
        # A refill is made lazily, at the first use of a new period: shown as made already.
        due = (row.credits_period or "") < refill_period(interval, now)
        return cls(
            remaining=amount if due else row.credits_remaining,
            refill=CreditRefill(amount=amount, interval=interval),
            refill_at=next_refill(interval, now),
        )


@strawberry.input
class CreditRefillInput:
    amount: int = strawberry.field(description="1 to 1,000,000,000.")
    interval: CreditRefillInterval  # type: ignore[valid-type]


@strawberry.input
class CreditsInput:
    remaining: int = strawberry.field(
        description="0 to 1,000,000,000: the balance, replacing what is left."
    )
    refill: CreditRefillInput | None = None

    def value(self) -> schemas.Credits:
        refill = self.refill
        return schemas.Credits(
            remaining=self.remaining,
            refill=None if refill is None else schemas.Refill(refill.amount, refill.interval),
        )


@strawberry.type(
    name="ApiKey",
    description="An API key of your organization. Its secret is shown only once, at creation.",
)
class ApiKeyType:
    id: strawberry.ID = strawberry.field(
        description="Opaque id: what revokeApiKey takes and verification reports as keyId."
    )
    name: str
    scopes: list[str]
    hint: str = strawberry.field(
        description="The key's first and last characters, to recognise it: kh_3fA9…x7Qk."
    )
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    status: ApiKeyStatus  # type: ignore[valid-type]
    superseded_at: datetime | None = strawberry.field(
        description="When a newer key replaced (or replaces, in a grace period) this one."
    )
    # Read with the key's row, whatever query read it (a page of keys: its one statement; a
    # key by id: the request's ApiKey DataLoader), so it costs no statement of its own. A plain
    # field rather than a resolver: on a page it is read like the others, without a call.
    last_used_at: datetime | None = strawberry.field(
        description="When the key last authenticated a request; null if never."
    )
    enabled: bool = strawberry.field(
        description="False while the key is paused: refused as DISABLED until enabled again."
    )
    meta: JSON | None = strawberry.field(
        description="Your own JSON object about the key (customer id, plan...), returned by "
        "verification."
    )
    ip_allowlist: list[str] = strawberry.field(
        description="The networks the key may be used from; empty: anywhere."
    )
    credits: Credits | None = strawberry.field(description="Null: the key's uses are unlimited.")
    leaked_at: datetime | None = strawberry.field(
        description="When a secret scanner reported this key found in public; null if never."
    )
    own_rate_limit: strawberry.Private[schemas.RateLimit | None]
    superseded_by_id: strawberry.Private[str | None]

    @strawberry.field(description="Days until the key expires (0 once expired); null if never.")
    def expires_in_days(self) -> int | None:
        if self.expires_at is None:
            return None
        return max(0, math.ceil((self.expires_at - utcnow()).total_seconds() / 86400))

    @strawberry.field(description="True while a replaced key still works (its grace period).")
    def deprecated(self) -> bool:
        return self.superseded_at is not None and self.superseded_at > utcnow()

    @strawberry.field(description="The key that replaced this one (rotation or policy).")
    async def superseded_by(self, info: Info) -> ApiKeyType | None:
        if self.superseded_by_id is None:
            return None
        row = await info.context.loader(loaders.api_keys).load(self.superseded_by_id)
        return None if row is None else ApiKeyType.of(row, info.context)

    @strawberry.field(description="The key's request budget, shared by all of its uses.")
    def rate_limit(self, info: Info) -> RateLimit:
        if self.own_rate_limit is not None:
            return RateLimit(
                requests=self.own_rate_limit.requests,
                per_seconds=self.own_rate_limit.per_seconds,
                is_default=False,
            )
        settings = info.context.runtime.settings
        return RateLimit(
            requests=settings.default_rate_limit_requests,
            per_seconds=settings.default_rate_limit_per_seconds,
            is_default=True,
        )

    @strawberry.field(
        extensions=needs(READ_ANALYTICS),
        description="How often this key was used over [from, to) (buckets of `granularity`).",
    )
    async def usage(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        granularity: Granularity = Granularity.HOUR,
    ) -> UsageCounts:
        # The usage feature answers (app/usage/loaders.py); keys never imports it.
        usage_of = info.context.key_usage
        assert usage_of is not None, "the view gives every context the usage figures"
        return UsageCounts.of(await usage_of(info.context, str(self.id), from_, to, granularity))

    @classmethod
    def of(
        cls, row: ApiKeyRow | ListedKey, context: Context, now: datetime | None = None
    ) -> ApiKeyType:
        now = now or utcnow()
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            scopes=row.scopes,
            hint=row.hint,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            status=row.status_at(now),
            superseded_at=row.superseded_at,
            last_used_at=context.latest_use(row.id, row.last_used_at),
            leaked_at=row.leaked_at,
            superseded_by_id=row.superseded_by_key_id,
            enabled=row.enabled,
            meta=None if row.meta is None else json.loads(row.meta),
            ip_allowlist=[] if row.ip_allowlist is None else row.ip_allowlist.split(),
            credits=Credits.of(row, now),
            own_rate_limit=(
                None
                if row.rate_limit_requests is None or row.rate_limit_per_seconds is None
                else schemas.RateLimit(row.rate_limit_requests, row.rate_limit_per_seconds)
            ),
        )


@strawberry.input
class ApiKeyFilter:
    status: ApiKeyStatusFilter | None = strawberry.UNSET
    scope: str | None = strawberry.field(
        default=strawberry.UNSET, description="Only keys holding this scope."
    )
    expiring_within_days: int | None = strawberry.field(
        default=strawberry.UNSET, description="Only active keys expiring within this many days."
    )


@strawberry.input
class CreateApiKeyInput:
    name: str = strawberry.field(description="1 to 128 characters, unique among live keys.")
    scopes: list[str] = strawberry.field(description="At least one; only scopes you hold.")
    expires_in_days: int | None = strawberry.field(
        default=None, description="1 to 3650; omit for a key that never expires."
    )
    rate_limit: RateLimitInput | None = strawberry.field(
        default=None, description="Omit to use the deployment's default limit."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Retrying with the same key (within 24 hours) returns the same key and "
        "secret instead of creating another.",
    )
    meta: JSON | None = strawberry.field(
        default=None,
        description="A JSON object of your own: at most 4 KB as JSON, 32 keys, 3 levels deep.",
    )
    ip_allowlist: list[str] | None = strawberry.field(
        default=None,
        description="Up to 100 IPv4/IPv6 addresses or CIDR blocks; omit: usable from anywhere.",
    )
    credits: CreditsInput | None = strawberry.field(
        default=None, description="Omit for a key whose uses are unlimited."
    )


@strawberry.type
class CreateApiKeyPayload:
    api_key: ApiKeyType | None = None
    secret: str | None = strawberry.field(
        default=None, description="The key itself. Shown only here, once: store it now."
    )
    superseded_api_keys: list[ApiKeyType] = strawberry.field(
        default_factory=list,
        description="Keys this one replaces under the single-active-key policy, oldest first: "
        f"the first {repository.SUPERSEDED_LISTED} (auditLog lists every one). Every key it "
        "replaces is refused from now on; past the first "
        f"{policy.SUPERSEDED_PER_BATCH:,}, their records (status, audit events) are written in "
        "the background, and while an earlier replacement is still being written this one "
        "waits for it and lists none.",
    )
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


@strawberry.input
class RotateApiKeyInput:
    id: strawberry.ID
    grace_period_hours: int = strawberry.field(
        default=0,
        description="0 to 720: how long the old secret keeps working (0: stop it now, for a "
        "leaked key).",
    )
    idempotency_key: str | None = strawberry.field(
        default=None, description="Retrying with the same key returns the same new key."
    )


@strawberry.type
class RotateApiKeyPayload:
    api_key: ApiKeyType | None = strawberry.field(default=None, description="The new key.")
    secret: str | None = strawberry.field(
        default=None, description="The new key's secret. Shown only here, once."
    )
    previous_api_key: ApiKeyType | None = strawberry.field(
        default=None, description="The rotated key, deprecated until its grace period ends."
    )
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


@strawberry.input(
    description="Only the fields given change; null clears what can be cleared (rateLimit back "
    "to the default, meta, ipAllowlist, credits: unlimited)."
)
class UpdateApiKeyInput:
    id: strawberry.ID
    name: str | None = strawberry.field(
        default=strawberry.UNSET, description="1 to 128 characters, unique among live keys."
    )
    scopes: list[str] | None = strawberry.field(
        default=strawberry.UNSET,
        description="The key's new scopes: any it has may be dropped, and only scopes you hold "
        "added.",
    )
    rate_limit: RateLimitInput | None = strawberry.UNSET
    meta: JSON | None = strawberry.field(
        default=strawberry.UNSET,
        description="A JSON object: at most 4 KB as JSON, 32 keys, 3 levels deep.",
    )
    ip_allowlist: list[str] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Up to 100 IPv4/IPv6 addresses or CIDR blocks; null or empty: anywhere.",
    )
    credits: CreditsInput | None = strawberry.field(
        default=strawberry.UNSET,
        description="Replaces the balance (and refill); null: unlimited.",
    )
    enabled: bool | None = strawberry.field(
        default=strawberry.UNSET,
        description="false pauses the key (refused as DISABLED); true resumes it.",
    )

    def value(self) -> schemas.KeyUpdate:
        def given(value: Any) -> Any:
            return schemas.UNCHANGED if value is strawberry.UNSET else value

        limit, credits = self.rate_limit, self.credits
        return schemas.KeyUpdate(
            key_id=str(self.id),
            name=given(self.name),
            scopes=given(self.scopes),
            rate_limit=(
                given(limit)
                if limit in (None, strawberry.UNSET)
                else schemas.RateLimit(limit.requests, limit.per_seconds)
            ),
            meta=given(self.meta),
            ip_allowlist=given(self.ip_allowlist),
            credits=given(credits) if credits in (None, strawberry.UNSET) else credits.value(),
            enabled=given(self.enabled),
        )


@strawberry.type
class UpdateApiKeyPayload:
    api_key: ApiKeyType | None = None
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


@strawberry.type
class RevokeApiKeyPayload:
    api_key: ApiKeyType | None = None
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


def _key_filter(value: ApiKeyFilter | None) -> schemas.KeyFilter:
    if value is None:
        return schemas.KeyFilter()
    status = value.status
    return schemas.KeyFilter(
        status=(
            None
            if status in (None, strawberry.UNSET, ApiKeyStatusFilter.ALL)
            else KeyStatus(status.value)
        ),
        scope=value.scope or None,
        expiring_within_days=(
            None
            if value.expiring_within_days in (None, strawberry.UNSET)
            else value.expiring_within_days
        ),
    )


@strawberry.type
class Query:
    @strawberry.field(extensions=needs(READ_API_KEYS), description="Your organization's keys.")
    async def api_keys(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        filter: ApiKeyFilter | None = None,
    ) -> Connection[ApiKeyType]:
        check_page_size(first)
        cursor = None if after is None else Cursor.decode(after)
        caller, key_filter = info.context.caller, _key_filter(filter)
        catalogue = info.context.runtime.catalogue
        async with info.context.db() as session:
            page = await repository.list_keys(
                session,
                caller,
                key_filter,
                first=first,
                after=cursor,
                catalogue=catalogue,
                counted=selects(info, "totalCount"),
            )

        async def count() -> int:
            if page.total_count is not None:
                return page.total_count
            async with info.context.db() as session:
                return await repository.count_listed_keys(
                    session, caller, key_filter, catalogue=catalogue
                )

        now = utcnow()
        return Connection.of(
            page.keys,
            lambda row: ApiKeyType.of(row, info.context, now),
            lambda row: Cursor(row.created_at, row.id),
            count=count,
            has_next_page=page.has_next_page,
            after=cursor,
        )

    @strawberry.field(
        extensions=needs(READ_API_KEYS),
        description="One of your organization's keys; null if there is no such key.",
    )
    async def api_key(self, info: Info, id: strawberry.ID) -> ApiKeyType | None:
        async with info.context.db() as session:
            row = await repository.get_key(session, info.context.caller, str(id))
        return None if row is None else ApiKeyType.of(row, info.context)

    @strawberry.field(
        description="Every scope a key can hold.", extensions=needs_organization_key()
    )
    def scopes(self, info: Info) -> list[Scope]:
        return [
            Scope(name=scope.name, description=scope.description)
            for scope in info.context.runtime.catalogue.all()
        ]


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=needs(WRITE_API_KEYS),
        description="Create a key. The payload carries its secret, the only time it is shown.",
    )
    async def create_api_key(self, info: Info, input: CreateApiKeyInput) -> CreateApiKeyPayload:
        runtime = info.context.runtime
        async with info.context.db() as session:
            result = await service.create_key(
                session,
                info.context.caller,
                schemas.KeyCreate(
                    name=input.name,
                    scopes=input.scopes,
                    expires_in_days=input.expires_in_days,
                    rate_limit=(
                        None
                        if input.rate_limit is None
                        else schemas.RateLimit(
                            input.rate_limit.requests, input.rate_limit.per_seconds
                        )
                    ),
                    idempotency_key=input.idempotency_key,
                    meta=input.meta,
                    ip_allowlist=input.ip_allowlist,
                    credits=None if input.credits is None else input.credits.value(),
                ),
                catalogue=runtime.catalogue,
                key_prefix=runtime.settings.key_prefix,
                broadcast=runtime.broadcast,
                server_secret=runtime.server_secret,
                previous_server_secret=runtime.previous_server_secret,
            )
        if isinstance(result, list):
            return CreateApiKeyPayload(user_errors=user_errors("createApiKey", result))
        return CreateApiKeyPayload(
            api_key=ApiKeyType.of(result.api_key, info.context),
            secret=result.secret,
            superseded_api_keys=[ApiKeyType.of(row, info.context) for row in result.superseded],
        )

    @strawberry.mutation(
        extensions=needs(WRITE_API_KEYS),
        description="Replace a key's secret: same name, scopes and limits; the old secret keeps "
        "working for the grace period, then is refused as SUPERSEDED.",
    )
    async def rotate_api_key(self, info: Info, input: RotateApiKeyInput) -> RotateApiKeyPayload:
        runtime = info.context.runtime
        async with info.context.db() as session:
            result = await rotation.rotate_key(
                session,
                info.context.caller,
                schemas.KeyRotate(
                    key_id=str(input.id),
                    grace_period_hours=input.grace_period_hours,
                    idempotency_key=input.idempotency_key,
                ),
                key_prefix=runtime.settings.key_prefix,
                broadcast=runtime.broadcast,
                server_secret=runtime.server_secret,
                previous_server_secret=runtime.previous_server_secret,
            )
        if isinstance(result, list):
            return RotateApiKeyPayload(user_errors=user_errors("rotateApiKey", result))
        return RotateApiKeyPayload(
            api_key=ApiKeyType.of(result.api_key, info.context),
            secret=result.secret,
            previous_api_key=ApiKeyType.of(result.previous, info.context),
        )

    @strawberry.mutation(
        extensions=needs(WRITE_API_KEYS),
        description="Change a key: only the fields given. Takes effect from the next request, "
        "on every instance.",
    )
    async def update_api_key(self, info: Info, input: UpdateApiKeyInput) -> UpdateApiKeyPayload:
        runtime = info.context.runtime
        async with info.context.db() as session:
            result = await update.update_key(
                session,
                info.context.caller,
                input.value(),
                catalogue=runtime.catalogue,
                broadcast=runtime.broadcast,
            )
        if isinstance(result, list):
            return UpdateApiKeyPayload(user_errors=user_errors("updateApiKey", result))
        return UpdateApiKeyPayload(api_key=ApiKeyType.of(result, info.context))

    @strawberry.mutation(
        extensions=needs(WRITE_API_KEYS),
        description="Revoke a key: immediate, permanent and idempotent.",
    )
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> RevokeApiKeyPayload:
        async with info.context.db() as session:
            result = await revocation.revoke_key(
                session, info.context.caller, str(id), broadcast=info.context.runtime.broadcast
            )
        if isinstance(result, UserError):
            return RevokeApiKeyPayload(user_errors=user_errors("revokeApiKey", [result]))
        return RevokeApiKeyPayload(api_key=ApiKeyType.of(result, info.context))
