"""GraphQL for webhooks: the endpoints, their deliveries, and managing them.

Reading needs ``read:api_keys``, managing ``write:api_keys`` (and ``read:api_keys``, checked by
the service): a webhook carries what those scopes guard, so no new scope is needed.
"""

from __future__ import annotations

from datetime import datetime

import strawberry

from app.graphql.context import Info
from app.graphql.permissions import needs, needs_organization_key
from app.graphql.types import Connection, UserErrorType, user_errors
from app.keys.scopes import READ_API_KEYS, WRITE_API_KEYS
from app.kit.errors import BadUserInput, UserError
from app.kit.pagination import DEFAULT_PAGE_SIZE, Cursor, check_page_size
from app.models.events import EventType
from app.models.webhooks import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from app.webhooks import schemas, service
from app.webhooks.destinations import allowed_http_hosts

WebhookDeliveryStatus = strawberry.enum(DeliveryStatus, name="WebhookDeliveryStatus")

# What a person choosing an endpoint's events reads beside each one.
EVENT_DESCRIPTIONS: dict[EventType, str] = {
    EventType.KEY_CREATED: "A key was created.",
    EventType.KEY_UPDATED: "A key's name, scopes, limits, metadata or state changed.",
    EventType.KEY_REVOKED: "A key was revoked.",
    EventType.KEY_ROTATED: "A key was rotated: a new secret replaces it.",
    EventType.KEY_SUPERSEDED: "A key stopped working because a newer key replaced it.",
    EventType.KEY_EXPIRING: "A key expires in 7 days, and again in 1 day.",
    EventType.KEY_EXPIRED: "A key reached its expiry.",
    EventType.KEY_LEAKED: "A secret scanner reported a key found in public.",
    EventType.POLICY_UPDATED: "The organization's key policy changed.",
}


@strawberry.type(name="WebhookEventType", description="An event an endpoint can receive.")
class WebhookEventTypeInfo:
    name: str = strawberry.field(description="What endpoints subscribe with: key.created…")
    description: str


@strawberry.type(
    name="WebhookEndpoint",
    description="Where your organization's events are sent, signed as Standard Webhooks.",
)
class WebhookEndpointType:
    id: strawberry.ID
    url: str
    description: str
    events: list[str] = strawberry.field(description="The event types it receives.")
    created_at: datetime
    enabled: bool = strawberry.field(
        description="False once deliveries failed for 3 days (or it was turned off): nothing "
        "is sent until it is enabled again (updateWebhookEndpoint)."
    )
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None = strawberry.field(
        description="After a rotation, until when the previous signing secret signs too."
    )

    @classmethod
    def of(cls, row: WebhookEndpoint) -> WebhookEndpointType:
        return cls(
            id=strawberry.ID(row.id),
            url=row.url,
            description=row.description,
            events=row.events,
            created_at=row.created_at,
            enabled=row.disabled_at is None,
            disabled_at=row.disabled_at,
            previous_secret_expires_at=row.previous_secret_until,
        )


@strawberry.type(
    name="WebhookDelivery", description="One event sent (or being sent) to one endpoint."
)
class WebhookDeliveryType:
    id: strawberry.ID
    event_id: str = strawberry.field(description="The webhook-id header: the same on every retry.")
    event_type: str
    status: WebhookDeliveryStatus  # type: ignore[valid-type]
    attempts: int
    response_status: int | None = strawberry.field(
        description="The HTTP status of the last attempt; null if it got no answer."
    )
    response_excerpt: str | None = strawberry.field(
        description="The start of the last answer (at most 200 bytes), or why it got none."
    )
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = strawberry.field(
        description="When the next attempt is due; null once delivered or failed."
    )
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: WebhookDelivery) -> WebhookDeliveryType:
        return cls(
            id=strawberry.ID(row.id),
            event_id=row.event_id,
            event_type=row.event_type,
            status=DeliveryStatus(row.status),
            attempts=row.attempts,
            response_status=row.response_status,
            response_excerpt=row.response_excerpt,
            created_at=row.created_at,
            last_attempt_at=row.last_attempt_at,
            next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
            delivered_at=row.delivered_at,
        )


@strawberry.input
class CreateWebhookEndpointInput:
    url: str = strawberry.field(description="https:// and a public address.")
    events: list[str] = strawberry.field(description="The event types to receive (key.created…).")
    description: str = ""


@strawberry.input
class UpdateWebhookEndpointInput:
    id: strawberry.ID
    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    enabled: bool | None = strawberry.field(
        default=None, description="true turns a disabled endpoint on again; false pauses it."
    )


@strawberry.type
class WebhookEndpointSecretPayload:
    endpoint: WebhookEndpointType | None = None
    signing_secret: str | None = strawberry.field(
        default=None,
        description="whsec_…: what receivers verify signatures with. Shown only here, once.",
    )
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpointType | None = None
    user_errors: list[UserErrorType] = strawberry.field(default_factory=list)


def _allowed_hosts(info: Info) -> frozenset[str]:
    return allowed_http_hosts(info.context.runtime.settings.webhook_allow_http_hosts)


def _secret_payload(
    mutation: str, result: schemas.EndpointWithSecret | list[UserError] | UserError
) -> WebhookEndpointSecretPayload:
    if isinstance(result, UserError):
        result = [result]
    if isinstance(result, list):
        return WebhookEndpointSecretPayload(user_errors=user_errors(mutation, result))
    return WebhookEndpointSecretPayload(
        endpoint=WebhookEndpointType.of(result.endpoint), signing_secret=result.signing_secret
    )


@strawberry.type
class Query:
    @strawberry.field(
        extensions=needs_organization_key(),
        description="Every event an endpoint can receive, with what it means.",
    )
    def webhook_event_types(self) -> list[WebhookEventTypeInfo]:
        return [
            WebhookEventTypeInfo(name=event.value, description=EVENT_DESCRIPTIONS[event])
            for event in EventType
        ]

    @strawberry.field(
        extensions=needs(READ_API_KEYS),
        description=f"Your organization's webhook endpoints (at most {schemas.MAX_ENDPOINTS}).",
    )
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpointType]:
        async with info.context.db() as session:
            rows = await service.list_endpoints(session, info.context.caller)
        return [WebhookEndpointType.of(row) for row in rows]

    @strawberry.field(
        extensions=needs(READ_API_KEYS),
        description="An endpoint's deliveries, newest first: status, attempts, last answer.",
    )
    async def webhook_deliveries(
        self,
        info: Info,
        endpoint_id: strawberry.ID,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[WebhookDeliveryType]:
        check_page_size(first)
        cursor = None if after is None else Cursor.decode(after)
        async with info.context.db() as session:
            page = await service.list_deliveries(
                session, info.context.caller, str(endpoint_id), first=first, after=cursor
            )
        if page is None:
            raise BadUserInput("No such webhook endpoint.", argument="endpointId")
        rows, has_next_page = page

        async def count() -> int:
            async with info.context.db() as session:
                return await service.count_deliveries(
                    session, info.context.caller, str(endpoint_id)
                )

        return Connection.of(
            rows,
            WebhookDeliveryType.of,
            lambda row: Cursor(row.created_at, row.id),
            count=count,
            has_next_page=has_next_page,
            after=cursor,
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=needs(WRITE_API_KEYS),
        description="Send events to a URL. The payload carries the signing secret, once.",
    )
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> WebhookEndpointSecretPayload:
        async with info.context.db() as session:
            result = await service.create_endpoint(
                session,
                info.context.caller,
                schemas.EndpointCreate(
                    url=input.url, events=input.events, description=input.description
                ),
                allowed_hosts=_allowed_hosts(info),
                server_secret=info.context.runtime.server_secret,
            )
        return _secret_payload("createWebhookEndpoint", result)

    @strawberry.mutation(extensions=needs(WRITE_API_KEYS))
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        async with info.context.db() as session:
            result = await service.update_endpoint(
                session,
                info.context.caller,
                schemas.EndpointUpdate(
                    endpoint_id=str(input.id),
                    url=input.url,
                    events=input.events,
                    description=input.description,
                    enabled=input.enabled,
                ),
                allowed_hosts=_allowed_hosts(info),
            )
        if isinstance(result, list):
            return WebhookEndpointPayload(user_errors=user_errors("updateWebhookEndpoint", result))
        return WebhookEndpointPayload(endpoint=WebhookEndpointType.of(result))

    @strawberry.mutation(
        extensions=needs(WRITE_API_KEYS),
        description="Delete an endpoint and its delivery log; nothing more is sent to it.",
    )
    async def delete_webhook_endpoint(
        self, info: Info, id: strawberry.ID
    ) -> WebhookEndpointPayload:
        async with info.context.db() as session:
            result = await service.delete_endpoint(session, info.context.caller, str(id))
        if isinstance(result, UserError):
            return WebhookEndpointPayload(
                user_errors=user_errors("deleteWebhookEndpoint", [result])
            )
        return WebhookEndpointPayload(endpoint=WebhookEndpointType.of(result))

    @strawberry.mutation(
        extensions=needs(WRITE_API_KEYS),
        description="A new signing secret (shown once); the previous one keeps signing beside "
        f"it for {schemas.PREVIOUS_SECRET_HOURS} hours.",
    )
    async def rotate_webhook_signing_secret(
        self, info: Info, id: strawberry.ID
    ) -> WebhookEndpointSecretPayload:
        async with info.context.db() as session:
            result = await service.rotate_signing_secret(
                session,
                info.context.caller,
                str(id),
                server_secret=info.context.runtime.server_secret,
            )
        return _secret_payload("rotateWebhookSigningSecret", result)
