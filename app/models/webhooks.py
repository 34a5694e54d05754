"""Webhook endpoints and their deliveries: where an organization's events go, and how each
attempt to take one there went."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, Integer, text
from sqlmodel import Field, SQLModel

from app.kit.db import UTCDateTime
from app.kit.ids import new_id
from app.kit.timeutil import utcnow


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_org", "organization_id", "created_at", "id"),)

    id: str = Field(default_factory=lambda: new_id("whe"), primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", max_length=32)
    url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=500)
    # The event types it receives, space-separated and sorted.
    events_text: str = Field(max_length=1000)
    # The signing secret, sealed under the server secret (app/webhooks/signing.py): a copy of
    # the database cannot sign as keyhouse.
    sealed_secret: str = Field(max_length=200)
    # After a rotation the previous secret signs too, until this moment, so that receivers can
    # move to the new one without missing a delivery.
    previous_sealed_secret: str | None = Field(default=None, max_length=200)
    previous_secret_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Set when deliveries kept failing; nothing is sent until the endpoint is enabled again.
    disabled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def events(self) -> list[str]:
        return self.events_text.split()


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


PENDING_CONDITION = "status = 'PENDING'"


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: made by the worker when it fans the event out, attempted
    until the endpoint acknowledges it (2xx) or three days have passed."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at", "id"),
        # The worker's questions: what is due, and what comes first for an endpoint and subject.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text(PENDING_CONDITION),
            postgresql_where=text(PENDING_CONDITION),
        ),
        Index(
            "ix_webhook_deliveries_order",
            "endpoint_id",
            "subject_id",
            "event_sequence",
            sqlite_where=text(PENDING_CONDITION),
            postgresql_where=text(PENDING_CONDITION),
        ),
    )

    id: str = Field(default_factory=lambda: new_id("whd"), primary_key=True, max_length=32)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", max_length=32)
    organization_id: str = Field(max_length=32)
    event_id: str = Field(max_length=32)
    event_type: str = Field(max_length=40)
    event_sequence: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite")))
    subject_id: str = Field(max_length=32)
    payload: str = Field(max_length=8000)
    status: str = Field(default=DeliveryStatus.PENDING.value, max_length=16)
    attempts: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    next_attempt_at: datetime | None = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # An instance attempting it holds it until then; after a crash, another takes it over.
    leased_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    response_status: int | None = Field(default=None)
    # At most a short excerpt of what the receiver answered, or why nothing was sent.
    response_excerpt: str | None = Field(default=None, max_length=300)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
