"""Webhook endpoints: where an organization's events go. Create, change, delete, rotate the
signing secret, and read the endpoints and their deliveries.

Every endpoint receives the public fields of every key of the organization it subscribes to:
what ``read:api_keys`` reads. So managing one needs ``write:api_keys`` (the GraphQL field) and
``read:api_keys`` as well (checked here, before anything else): a key that may not read the
keys must not have them sent wherever it likes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.scopes import READ_API_KEYS
from app.kit.boundary import excerpt, value_problem
from app.kit.db import execute_core
from app.kit.errors import UserError, UserErrorCode
from app.kit.ids import is_id_of, new_id
from app.kit.pagination import Cursor
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.models.events import EventType
from app.models.webhooks import WebhookDelivery, WebhookEndpoint
from app.webhooks.destinations import RefusedDestination, check_url
from app.webhooks.schemas import (
    DESCRIPTION_MAX_LENGTH,
    MAX_ENDPOINTS,
    PREVIOUS_SECRET_HOURS,
    EndpointCreate,
    EndpointUpdate,
    EndpointWithSecret,
)
from app.webhooks.signing import new_signing_secret, seal

EVENT_TYPES = tuple(event.value for event in EventType)


def _forbidden_without_read(caller: Caller) -> UserError | None:
    if caller.holds(READ_API_KEYS):
        return None
    return UserError(
        UserErrorCode.FORBIDDEN,
        None,
        f"Webhooks carry every key's public fields: managing them needs '{READ_API_KEYS}' "
        "too, which your key does not hold.",
    )


def _url_error(url: str, allowed_hosts: frozenset[str]) -> tuple[str, UserError | None]:
    problem = value_problem(url)
    if problem is not None:
        return url, UserError(UserErrorCode.INVALID_INPUT, "url", f"url {problem}.")
    try:
        return check_url(url, allowed_hosts), None
    except RefusedDestination as refusal:
        return url, UserError(
            UserErrorCode.INVALID_INPUT, "url", f"{refusal} (got '{excerpt(url)}')"
        )


def _events_error(events: Sequence[str]) -> tuple[str, UserError | None]:
    unknown = sorted({event for event in events if event not in EVENT_TYPES})
    if not events:
        return "", UserError(
            UserErrorCode.INVALID_INPUT,
            "events",
            f"Subscribe to at least one event: {', '.join(EVENT_TYPES)}.",
        )
    if unknown:
        return "", UserError(
            UserErrorCode.INVALID_INPUT,
            "events",
            f"Unknown event '{excerpt(unknown[0])}'; the events are {', '.join(EVENT_TYPES)}.",
        )
    return " ".join(sorted(set(events))), None


def _description_error(description: str) -> UserError | None:
    problem = value_problem(description, max_length=DESCRIPTION_MAX_LENGTH)
    if problem is None:
        return None
    return UserError(UserErrorCode.INVALID_INPUT, "description", f"description {problem}.")


def not_found(endpoint_id: str) -> UserError:
    return UserError(
        UserErrorCode.NOT_FOUND, "id", f"No webhook endpoint '{excerpt(endpoint_id)}'."
    )


async def get_endpoint(
    session: AsyncSession, caller: Caller, endpoint_id: str
) -> WebhookEndpoint | None:
    """The caller's organization's endpoint with this id; None for any other id, of any shape."""
    if not is_id_of("whe", endpoint_id):
        return None
    statement = select(WebhookEndpoint).where(
        col(WebhookEndpoint.id) == endpoint_id,
        col(WebhookEndpoint.organization_id) == caller.organization_id,
    )
    return (await session.exec(statement)).first()


async def list_endpoints(session: AsyncSession, caller: Caller) -> list[WebhookEndpoint]:
    statement = (
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.organization_id) == caller.organization_id)
        .order_by(col(WebhookEndpoint.created_at).desc(), col(WebhookEndpoint.id).desc())
    )
    return list((await session.exec(statement)).all())


async def create_endpoint(
    session: AsyncSession,
    caller: Caller,
    data: EndpointCreate,
    *,
    allowed_hosts: frozenset[str],
    server_secret: bytes,
) -> EndpointWithSecret | list[UserError]:
    forbidden = _forbidden_without_read(caller)
    if forbidden is not None:
        return [forbidden]
    url, url_error = _url_error(data.url, allowed_hosts)
    events, events_error = _events_error(data.events)
    found = [url_error, events_error, _description_error(data.description)]
    errors = [error for error in found if error is not None]
    if errors:
        return errors
    count = await session.exec(
        select(func.count()).where(col(WebhookEndpoint.organization_id) == caller.organization_id)
    )
    if count.one() >= MAX_ENDPOINTS:
        return [
            UserError(
                UserErrorCode.INVALID_INPUT,
                None,
                f"An organization has at most {MAX_ENDPOINTS} webhook endpoints; delete one first.",
            )
        ]
    endpoint_id = new_id("whe")
    secret = new_signing_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        organization_id=caller.organization_id,
        url=url,
        description=data.description.strip(),
        events_text=events,
        sealed_secret=seal(server_secret, endpoint_id, secret),
    )
    session.add(endpoint)
    record_event(
        session,
        caller,
        AuditAction.WEBHOOK_ENDPOINT_CREATED,
        details={"endpointId": endpoint_id, "url": url, "events": endpoint.events},
    )
    await session.flush()
    return EndpointWithSecret(endpoint, secret)


async def update_endpoint(
    session: AsyncSession, caller: Caller, data: EndpointUpdate, *, allowed_hosts: frozenset[str]
) -> WebhookEndpoint | list[UserError]:
    forbidden = _forbidden_without_read(caller)
    if forbidden is not None:
        return [forbidden]
    url, url_error = (None, None) if data.url is None else _url_error(data.url, allowed_hosts)
    events, events_error = (None, None) if data.events is None else _events_error(data.events)
    description_error = None if data.description is None else _description_error(data.description)
    errors = [e for e in (url_error, events_error, description_error) if e is not None]
    if errors:
        return errors
    endpoint = await get_endpoint(session, caller, data.endpoint_id)
    if endpoint is None:
        return [not_found(data.endpoint_id)]
    changed: dict[str, object] = {}
    if url is not None and url != endpoint.url:
        endpoint.url = changed["url"] = url
    if events is not None and events != endpoint.events_text:
        endpoint.events_text = events
        changed["events"] = endpoint.events
    if data.description is not None and data.description.strip() != endpoint.description:
        endpoint.description = changed["description"] = data.description.strip()
    if data.enabled is not None and data.enabled != (endpoint.disabled_at is None):
        endpoint.disabled_at = None if data.enabled else utcnow()
        changed["enabled"] = data.enabled
    if changed:
        session.add(endpoint)
        record_event(
            session,
            caller,
            AuditAction.WEBHOOK_ENDPOINT_UPDATED,
            details={"endpointId": endpoint.id, **changed},
        )
        await session.flush()
    return endpoint


async def delete_endpoint(
    session: AsyncSession, caller: Caller, endpoint_id: str
) -> WebhookEndpoint | UserError:
    """Deletes the endpoint and its delivery log; what is still pending is never sent."""
    forbidden = _forbidden_without_read(caller)
    if forbidden is not None:
        return forbidden
    endpoint = await get_endpoint(session, caller, endpoint_id)
    if endpoint is None:
        return not_found(endpoint_id)
    await execute_core(
        session, delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint.id)
    )
    await session.delete(endpoint)
    record_event(
        session,
        caller,
        AuditAction.WEBHOOK_ENDPOINT_DELETED,
        details={"endpointId": endpoint.id, "url": endpoint.url},
    )
    await session.flush()
    return endpoint


async def rotate_signing_secret(
    session: AsyncSession, caller: Caller, endpoint_id: str, *, server_secret: bytes
) -> EndpointWithSecret | UserError:
    """A new signing secret; the current one keeps signing beside it for 24 hours (a second
    rotation within them ends the oldest one's overlap at once)."""
    forbidden = _forbidden_without_read(caller)
    if forbidden is not None:
        return forbidden
    endpoint = await get_endpoint(session, caller, endpoint_id)
    if endpoint is None:
        return not_found(endpoint_id)
    secret = new_signing_secret()
    endpoint.previous_sealed_secret = endpoint.sealed_secret
    endpoint.previous_secret_until = utcnow() + timedelta(hours=PREVIOUS_SECRET_HOURS)
    endpoint.sealed_secret = seal(server_secret, endpoint.id, secret)
    session.add(endpoint)
    record_event(
        session,
        caller,
        AuditAction.WEBHOOK_SECRET_ROTATED,
        details={"endpointId": endpoint.id, "previousSecretUntil": endpoint.previous_secret_until},
    )
    await session.flush()
    return EndpointWithSecret(endpoint, secret)


async def list_deliveries(
    session: AsyncSession, caller: Caller, endpoint_id: str, *, first: int, after: Cursor | None
) -> tuple[list[WebhookDelivery], bool] | None:
    """A page of the endpoint's deliveries, newest first, and whether more follow; None when
    the caller's organization has no such endpoint."""
    endpoint = await get_endpoint(session, caller, endpoint_id)
    if endpoint is None:
        return None
    statement = select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint.id)
    if after is not None:
        created, id_ = col(WebhookDelivery.created_at), col(WebhookDelivery.id)
        statement = statement.where(
            (created < after.created_at) | ((created == after.created_at) & (id_ < after.id))
        )
    statement = statement.order_by(
        col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc()
    ).limit(first + 1)
    rows = list((await session.exec(statement)).all())
    return rows[:first], len(rows) > first
