"""UTC time helpers: every timestamp in keyhouse is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes from the database are UTC; give them their zone back."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
