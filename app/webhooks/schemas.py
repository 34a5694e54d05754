"""What the webhook endpoints' service takes and answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.models.webhooks import WebhookEndpoint

DESCRIPTION_MAX_LENGTH = 500
# Endpoints per organization: a page that lists them all stays small (and costs what the
# GraphQL cost model counts for a short list).
MAX_ENDPOINTS = 10
# After a rotation the old signing secret keeps signing alongside the new one this long.
PREVIOUS_SECRET_HOURS = 24


@dataclass(frozen=True, slots=True)
class EndpointCreate:
    url: str
    events: Sequence[str]
    description: str = ""


@dataclass(frozen=True, slots=True)
class EndpointUpdate:
    """Fields left as None keep their value. ``enabled`` turns a disabled endpoint on again."""

    endpoint_id: str
    url: str | None = None
    events: Sequence[str] | None = None
    description: str | None = None
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class EndpointWithSecret:
    """An endpoint and its signing secret: answered only when the secret is new."""

    endpoint: WebhookEndpoint
    signing_secret: str
