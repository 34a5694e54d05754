"""Settings, read from ``KEYHOUSE_*`` environment variables."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from functools import cached_property

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_POOL_SIZE = 2
# The database drivers keyhouse runs on (async SQLAlchemy): a URL naming another is refused at
# start with the forms it accepts.
DATABASE_URL_FORMS = ("sqlite+aiosqlite://", "postgresql+asyncpg://")

# The product scopes a deployment starts with (a charging-network API's own table). A deployment
# replaces them with its own through KEYHOUSE_PRODUCT_SCOPES (a JSON object of name -> description).
DEFAULT_PRODUCT_SCOPES: dict[str, str] = {
    "read:charge_points": "Read charge point data and status",
    "write:charge_points": "Register and update charge points",
    "read:billing": "View billing records and invoices",
    "write:billing": "Modify billing configuration",
    "read:analytics": "Access usage analytics and reports",
    "write:webhooks": "Create and manage webhook endpoints",
    "read:sessions": "View charging session history",
}


class Plane(StrEnum):
    """What one keyhouse process answers. Separate processes for the two planes keep the data
    plane's latency from depending on how heavy the control plane's queries are."""

    DATA = "data"  # /v1/keys/verify, /v1/auth, health and metrics
    CONTROL = "control"  # /graphql, health and metrics
    ALL = "all"


class LogFormat(StrEnum):
    TEXT = "text"  # time, level, logger, message: for a terminal
    JSON = "json"  # one JSON object per line: for a log pipeline


class Settings(BaseSettings):
    # Errors never echo a setting's value: it may be a secret or a URL with a password.
    model_config = SettingsConfigDict(
        env_prefix="KEYHOUSE_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite+aiosqlite:///./keyhouse.db"
    redis_url: str | None = None

    key_prefix: str = Field(default="kh", pattern=r"^[a-z][a-z0-9]{1,9}$")
    product_scopes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PRODUCT_SCOPES))

    # Per-key rate limit when a key has none of its own.
    default_rate_limit_requests: int = Field(default=1000, ge=1)
    default_rate_limit_per_seconds: int = Field(default=60, ge=1)

    # Verification cache. With the Redis revocation broadcast live, entries live this long; the
    # TTL is only a safety net then. Without a live broadcast (no Redis, or Redis down) the short
    # TTL bounds how long another instance's revocation can go unseen.
    cache_ttl_seconds: float = Field(default=60.0, gt=0)
    cache_ttl_without_broadcast_seconds: float = Field(default=5.0, gt=0)
    cache_max_entries: int = Field(default=100_000, ge=1)
    negative_cache_ttl_seconds: float = Field(default=30.0, ge=0)
    negative_cache_max_entries: int = Field(default=10_000, ge=1)
    # Concurrent database lookups for keys not in the cache: a flood of well-formed but unknown
    # keys queues here instead of taking every connection of the database pool (PostgreSQL's 20;
    # on SQLite the pool is smaller still, and the lookups queue there).
    max_concurrent_key_lookups: int = Field(default=8, ge=1)
    # Connections to a SQLite database. Each one has its own aiosqlite thread, and under load
    # every extra thread contends for the GIL: SQLAlchemy's default of 5 (+10 overflow) cost the
    # keys page a sixth more CPU at 32 connections than 2. SQLite writes one transaction at a
    # time anyway. At least 2: `keyhouse serve` holds one while it bootstraps with another.
    sqlite_pool_size: int = Field(default=DEFAULT_SQLITE_POOL_SIZE, ge=2)

    # How often in-memory usage (counts, last_used_at) is written to the database, and how many
    # distinct buckets may wait in memory before a flush starts early.
    usage_flush_interval_seconds: float = Field(default=5.0, gt=0)
    usage_flush_max_buckets: int = Field(default=50_000, ge=1)
    # Distinct operation labels counted per key and hour; a key's further labels that hour are
    # counted under "(other)". Bounds the usage tables whatever callers send. Per instance.
    usage_max_labels_per_key_hour: int = Field(default=1000, ge=1)
    # How long usage is kept, per granularity. Older buckets are deleted; queries reaching
    # further back are refused rather than answered with zeros.
    usage_retention_minute_hours: int = Field(default=72, ge=1)
    usage_retention_hour_days: int = Field(default=120, ge=1)
    usage_retention_day_days: int = Field(default=3660, ge=1)

    # 64 hex characters (`keyhouse secret generate`); see app/kit/server_secret.py. Required with
    # PostgreSQL; the SQLite default creates one beside its database file.
    secret_key: SecretStr | None = None
    # The secret before the current one, during a rotation: what it sealed still opens.
    secret_key_previous: SecretStr | None = None

    # When set, /v1/keys/verify and /v1/auth require this token in X-Keyhouse-Service-Token.
    service_token: str | None = None

    # GraphQL abuse limits.
    graphql_max_depth: int = Field(default=10, ge=1)
    graphql_max_tokens: int = Field(default=2000, ge=1)
    graphql_max_aliases: int = Field(default=15, ge=1)
    # Bodies past this are refused (HTTP 413) before they are read in full, let alone parsed.
    graphql_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    # The most an operation may cost (app/graphql/cost.py); the default admits each dashboard
    # operation four times over and refuses what costs much more.
    graphql_max_cost: int = Field(default=60_000, ge=1)

    # Whether this instance delivers webhooks and writes expiry notices (every instance may:
    # they share the work). Off for an instance that should only answer requests.
    deliver_webhooks: bool = True
    # Webhooks. Plain http (and private addresses) only to these hosts, comma-separated: a
    # receiver inside the deployment's own network, or tests.
    webhook_allow_http_hosts: str = ""
    # Each attempt gets this long to connect and to be answered.
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    # How often an instance looks for events and deliveries other instances committed (its own
    # commits wake it at once).
    webhook_poll_interval_seconds: float = Field(default=0.5, gt=0)
    # An instance attempting a delivery holds it this long; after a crash another takes it over.
    webhook_lease_seconds: float = Field(default=30.0, gt=0)
    # Attempts in flight at once, per instance.
    webhook_max_concurrency: int = Field(default=64, ge=1)
    # How often the expiry notices are looked for.
    expiry_notice_interval_seconds: float = Field(default=60.0, gt=0)
    # The public keys leak reports are signed with, as GitHub publishes them:
    # {"public_keys": [{"key_identifier", "key", "is_current"}]} (PEM keys). Unset: the leak
    # report endpoint answers 404.
    leak_report_public_keys: str | None = None

    plane: Plane = Plane.ALL

    # The address people reach keyhouse at (https://keys.example.com), for the dashboard
    # sign-in links the operator API makes; by default, the address the request came to.
    public_url: str | None = None
    # How long a dashboard sign-in made with such a link lasts.
    dashboard_sign_in_hours: int = Field(default=8, ge=1, le=24)

    # The proxies (comma-separated addresses or CIDR blocks) whose X-Forwarded-For / X-Real-IP
    # say where a request came from: a gateway in front of keyhouse. Nobody by default: the
    # connection's peer is the caller. uvicorn's forwarded_allow_ips is set from this too.
    trusted_proxies: str = ""

    log_level: str = Field(default="INFO", pattern=r"^(?i:DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_format: LogFormat = LogFormat.TEXT
    # Where the workers of `keyhouse serve --workers N` keep their metrics, for /metrics to sum
    # (emptied at start); by default a temporary directory of the server's own.
    metrics_directory: str | None = None

    @field_validator("database_url")
    @classmethod
    def _a_driver_keyhouse_speaks(cls, value: str) -> str:
        if not value.startswith(DATABASE_URL_FORMS):
            raise ValueError(
                "use sqlite+aiosqlite:///PATH (the default, ./keyhouse.db) or "
                "postgresql+asyncpg://USER@HOST:PORT/DATABASE"
            )
        return value

    @field_validator("secret_key", "secret_key_previous")
    @classmethod
    def _secret_is_64_hex(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value.get_secret_value()):
            # The value itself is never echoed: it is a secret, even when malformed.
            raise ValueError("must be 64 hex characters (32 bytes): `keyhouse secret generate`")
        return value

    @field_validator("product_scopes")
    @classmethod
    def _scopes_not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or any(ch.isspace() for ch in name):
                raise ValueError(f"scope names cannot be empty or contain spaces: {name!r}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        for entry in _entries(value):
            try:
                ipaddress.ip_network(entry, strict=True)
            except ValueError:
                raise ValueError(
                    f"{entry[:64]!r} is not an address or a CIDR block (without host bits); "
                    "give comma-separated addresses or CIDR blocks"
                ) from None
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(entry) for entry in _entries(self.trusted_proxies))

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _entries(value: str) -> list[str]:
    return [entry.strip() for entry in value.split(",") if entry.strip()]
