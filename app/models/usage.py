from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, PrimaryKeyConstraint
from sqlmodel import Field, SQLModel

from app.kit.db import UTCDateTime
from app.kit.labels import OPERATION_MAX_LENGTH

# Room for the longest outcome name (ORGANIZATION_SUSPENDED) and a few more.
OUTCOME_MAX_LENGTH = 32


class Granularity(StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"

    @property
    def seconds(self) -> int:
        return _SECONDS[self]


_SECONDS = {Granularity.MINUTE: 60, Granularity.HOUR: 3600, Granularity.DAY: 86400}


# What identifies a bucket, in the order usage queries narrow it down. A key belongs to one
# organization, so the organization adds nothing to uniqueness: it is first for the queries.
BUCKET_KEY = (
    "organization_id",
    "granularity",
    "bucket_start",
    "api_key_id",
    "operation",
    "outcome",
)
ORGANIZATION_KEY = ("organization_id", "granularity", "bucket_start", "outcome")
KEY_USAGE_KEY = ("organization_id", "granularity", "bucket_start", "api_key_id")


class UsageBucket(SQLModel, table=True):
    """How often one key was used for one operation with one outcome in one time bucket.

    Pre-aggregated, never one row per request. Every flush adds its counts to the minute, hour
    and day bucket at once (``count = count + excluded.count``), so instances flushing the same
    bucket concurrently never lose each other's counts.
    """

    __tablename__ = "usage_buckets"
    # Every usage query is a range of the primary key; SQLite stores the table clustered by it
    # (WITHOUT ROWID), with the count beside it (migration 0005).
    __table_args__ = (
        PrimaryKeyConstraint(*BUCKET_KEY),
        Index("ix_usage_key_range", "api_key_id", "granularity", "bucket_start"),
        {"sqlite_with_rowid": False},
    )

    granularity: str = Field(max_length=6)
    bucket_start: datetime = Field(sa_type=UTCDateTime)
    api_key_id: str = Field(max_length=32)
    organization_id: str = Field(max_length=32)
    operation: str = Field(max_length=OPERATION_MAX_LENGTH)
    outcome: str = Field(max_length=OUTCOME_MAX_LENGTH)
    count: int = Field(sa_column=Column(BigInteger, nullable=False))


class OrganizationUsage(SQLModel, table=True):
    """An organization's uses per time bucket and outcome, whatever the key and operation.

    Written by the same flush as :class:`UsageBucket` (the same additive upsert), so that the
    questions without a key or operation filter (totals, series, by outcome: a dashboard's
    chart) read a few rows per bucket instead of one per key and operation label.
    """

    __tablename__ = "organization_usage"
    __table_args__ = (PrimaryKeyConstraint(*ORGANIZATION_KEY), {"sqlite_with_rowid": False})

    organization_id: str = Field(max_length=32)
    granularity: str = Field(max_length=6)
    bucket_start: datetime = Field(sa_type=UTCDateTime)
    outcome: str = Field(max_length=OUTCOME_MAX_LENGTH)
    count: int = Field(sa_column=Column(BigInteger, nullable=False))


class KeyUsage(SQLModel, table=True):
    """A key's uses per time bucket, whatever the operation and outcome: all of them, and the
    valid ones.

    Written by the same flush as :class:`UsageBucket` (the same additive upsert), so that the
    keys used most in a range (``byKey``) read one row per key and bucket, in the primary key's
    order, instead of one per key, operation label and outcome.
    """

    __tablename__ = "key_usage"
    __table_args__ = (PrimaryKeyConstraint(*KEY_USAGE_KEY), {"sqlite_with_rowid": False})

    organization_id: str = Field(max_length=32)
    granularity: str = Field(max_length=6)
    bucket_start: datetime = Field(sa_type=UTCDateTime)
    api_key_id: str = Field(max_length=32)
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    valid: int = Field(sa_column=Column(BigInteger, nullable=False))


@dataclass(frozen=True, slots=True)
class Counts:
    """Uses counted: all of them and the valid ones (the rest were refused)."""

    requests: int = 0
    valid: int = 0

    @property
    def rejected(self) -> int:
        return self.requests - self.valid
