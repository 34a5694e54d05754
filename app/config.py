"""Settings, read from ``KEYHOUSE_*`` environment variables."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from enum import StrEnum
from functools import cached_property

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.kit.boundary import value_problem

DEFAULT_SQLITE_POOL_SIZE = 2
# The database drivers keyhouse runs on (async SQLAlchemy): a URL naming another is refused at
# start with the forms it accepts.
DATABASE_URL_FORMS = ("sqlite+aiosqlite://", "postgresql+asyncpg://")

# What tracing needs of the `otel` extra (app/kit/tracing.py imports them only when it is on).
TRACING_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.instrumentation.asgi",
    "opentelemetry.instrumentation.sqlalchemy.engine",
)

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


OTEL_ENDPOINT_MAX_LENGTH = 2048


class Settings(BaseSettings):
    # Errors never echo a setting's value: it may be a secret or a URL with a password.
    model_config = SettingsConfigDict(
        env_prefix="KEYHOUSE_",
        extra="ignore",
        hide_input_in_errors=True,
        # Each setting's docstring is its description: the README's table is written from them.
        use_attribute_docstrings=True,
    )

    database_url: str = "sqlite+aiosqlite:///./keyhouse.db"
    """The database: `sqlite+aiosqlite:///PATH` or
    `postgresql+asyncpg://USER:PASSWORD@HOST:5432/DATABASE`; any other form is refused at start.
    """
    redis_url: str | None = None
    """Redis (`redis://HOST:6379/0`), for rate limits shared by every instance and worker and the
    revocation broadcast; unset: in-memory limits, no broadcast. Required by `--workers` above 1.
    """

    key_prefix: str = Field(default="kh", pattern=r"^[a-z][a-z0-9]{1,9}$")
    """The prefix of new keys (`kh_…`): 2 to 10 lower-case letters and digits."""
    product_scopes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PRODUCT_SCOPES))
    """Your product's scopes, a JSON object of name to description; the default is a
    charging-network API's table (`read:charge_points`…).
    """

    default_rate_limit_requests: int = Field(default=1000, ge=1)
    """Requests per window for a key without a limit of its own."""
    default_rate_limit_per_seconds: int = Field(default=60, ge=1)
    """That window, in seconds."""

    # Verification cache. With the Redis revocation broadcast live, entries live this long; the
    # TTL is only a safety net then. Without a live broadcast (no Redis, or Redis down) the short
    # TTL bounds how long another instance's revocation can go unseen.
    cache_ttl_seconds: float = Field(default=60.0, gt=0)
    """How long a verified key stays in a process's cache while the revocation broadcast is live."""
    cache_ttl_without_broadcast_seconds: float = Field(default=5.0, gt=0)
    """The same without a live broadcast: the longest a revocation made elsewhere can go unseen."""
    cache_max_entries: int = Field(default=100_000, ge=1)
    """Keys held in each process's cache."""
    negative_cache_ttl_seconds: float = Field(default=30.0, ge=0)
    """How long a well-formed unknown key is remembered as unknown."""
    negative_cache_max_entries: int = Field(default=10_000, ge=1)
    """Unknown keys remembered."""
    # Concurrent database lookups for keys not in the cache: a flood of well-formed but unknown
    # keys queues here instead of taking every connection of the database pool (PostgreSQL's 20;
    # on SQLite the pool is smaller still, and the lookups queue there).
    max_concurrent_key_lookups: int = Field(default=8, ge=1)
    """Database lookups of uncached keys at once, per process."""
    # Connections to a SQLite database. Each one has its own aiosqlite thread, and under load
    # every extra thread contends for the GIL: SQLAlchemy's default of 5 (+10 overflow) cost the
    # keys page a sixth more CPU at 32 connections than 2. SQLite writes one transaction at a
    # time anyway. At least 2: `keyhouse serve` holds one while it bootstraps with another.
    sqlite_pool_size: int = Field(default=DEFAULT_SQLITE_POOL_SIZE, ge=2)
    """Connections to a SQLite database (at least 2)."""

    usage_flush_interval_seconds: float = Field(default=5.0, gt=0)
    """How often counted usage is written to the database."""
    usage_flush_max_buckets: int = Field(default=50_000, ge=1)
    """Usage buckets waiting in memory that start a flush early."""
    # Distinct operation labels counted per key and hour; a key's further labels that hour are
    # counted under "(other)". Bounds the usage tables whatever callers send. Per instance.
    usage_max_labels_per_key_hour: int = Field(default=1000, ge=1)
    """Operation labels counted per key and hour (per process); further ones are counted under
    `(other)`.
    """
    # How long usage is kept, per granularity. Older buckets are deleted; queries reaching
    # further back are refused rather than answered with zeros.
    usage_retention_minute_hours: int = Field(default=72, ge=1)
    """Hours of minute buckets kept."""
    usage_retention_hour_days: int = Field(default=120, ge=1)
    """Days of hour buckets kept."""
    usage_retention_day_days: int = Field(default=3660, ge=1)
    """Days of day buckets kept."""

    # 64 hex characters (`keyhouse secret generate`); see app/kit/server_secret.py. Required with
    # PostgreSQL; the SQLite default creates one beside its database file.
    secret_key: SecretStr | None = None
    """The server secret, 64 hex characters (`keyhouse secret generate`), the same on every
    instance. Required with PostgreSQL; on SQLite created on first run in `<database>.secret`. See
    docs/deploy.md.
    """
    secret_key_previous: SecretStr | None = None
    """During a rotation of the server secret, the one before: what it sealed (idempotency records,
    24 hours of them at most) still opens. Remove it a day later.
    """

    service_token: str | None = None
    """When set, `/v1/keys/verify` and `/v1/auth` require it in `X-Keyhouse-Service-Token`."""

    # GraphQL abuse limits.
    graphql_max_depth: int = Field(default=10, ge=1)
    """Deepest GraphQL selection admitted."""
    graphql_max_tokens: int = Field(default=2000, ge=1)
    """Most tokens in a GraphQL document."""
    graphql_max_aliases: int = Field(default=15, ge=1)
    """Most aliases in a GraphQL document."""
    # Bodies past this are refused (HTTP 413) before they are read in full, let alone parsed.
    graphql_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    """Largest `/graphql` body (HTTP 413 past it)."""
    # The most an operation may cost (app/graphql/cost.py); the default admits each dashboard
    # operation four times over and refuses what costs much more.
    graphql_max_cost: int = Field(default=60_000, ge=1)
    """Highest static cost of a GraphQL operation."""

    deliver_webhooks: bool = True
    """Whether this instance delivers webhooks and writes expiry notices (instances share the work);
    off for one that should only answer requests.
    """
    webhook_allow_http_hosts: str = ""
    """Hosts (comma-separated) webhooks may reach over plain http and at private or loopback
    addresses: a receiver inside your own network.
    """
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    """How long a webhook attempt may take to connect and be answered."""
    webhook_poll_interval_seconds: float = Field(default=0.5, gt=0)
    """How often an instance looks for events other instances committed (its own wake it at once).
    """
    webhook_lease_seconds: float = Field(default=30.0, gt=0)
    """How long an instance holds a delivery it attempts; after a crash another takes it over."""
    webhook_max_concurrency: int = Field(default=128, ge=1)
    """Webhook attempts in flight at once, per instance."""
    expiry_notice_interval_seconds: float = Field(default=60.0, gt=0)
    """How often keys about to expire, or expired, are looked for."""
    leak_report_public_keys: str | None = None
    """The public keys secret scanners sign leak reports with, as GitHub publishes them
    (`{"public_keys": [...]}`, PEM keys); unset: `/v1/keys/leaked` answers 404.
    """

    plane: Plane = Plane.ALL
    """What a process answers: `data`, `control` or `all` (as `keyhouse serve --plane`)."""

    public_url: str | None = None
    """The address people reach keyhouse at (`https://keys.example.com`), for the dashboard sign-in
    links the operator API makes; unset: the address the request came to.
    """
    dashboard_sign_in_hours: int = Field(default=8, ge=1, le=24)
    """How long a dashboard sign-in made with an operator's link lasts (1 to 24 hours)."""

    trusted_proxies: str = ""
    """Proxies (comma-separated addresses or CIDR blocks) whose `X-Forwarded-For` / `X-Real-IP` name
    the caller's address, for IP allowlists; uvicorn's `forwarded_allow_ips` follows it. Empty: the
    connection's peer is the caller.
    """

    log_level: str = Field(default="INFO", pattern=r"^(?i:DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    """`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`."""
    log_format: LogFormat = LogFormat.TEXT
    """`text`, or `json`: one JSON object per line (time, level, logger, message, request id,
    organization id).
    """
    otel_endpoint: str | None = None
    """An OpenTelemetry collector's OTLP/HTTP address (`http://collector:4318`): each request,
    verification and database statement is then sent to its `/v1/traces` as a span. Needs the
    `otel` extra (`pip install 'keyhouse[otel]'`). The standard `OTEL_*` variables (service name,
    headers, sampler, batching) apply. See docs/deploy.md.
    """
    metrics_directory: str | None = None
    """Where the workers of `--workers` keep their metrics for `/metrics` to sum (emptied at start);
    unset: a temporary directory.
    """

    @field_validator("database_url")
    @classmethod
    def _a_driver_keyhouse_speaks(cls, value: str) -> str:
        if not value.startswith(DATABASE_URL_FORMS):
            raise ValueError(
                "use sqlite+aiosqlite:///PATH (the default, ./keyhouse.db) or "
                "postgresql+asyncpg://USER@HOST:PORT/DATABASE"
            )
        return value

    @field_validator("otel_endpoint")
    @classmethod
    def _collector_over_http_with_the_extra(cls, value: str | None) -> str | None:
        if not value:
            return None
        problem = value_problem(value, max_length=OTEL_ENDPOINT_MAX_LENGTH)
        if problem is not None:  # a control or invisible character, or an address far too long
            raise ValueError(f"the collector's address {problem}")
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("use the collector's http:// or https:// address (http://HOST:4318)")
        if not all(_installed(module) for module in TRACING_MODULES):
            raise ValueError(
                "tracing needs the otel extra: pip install 'keyhouse[otel]' (or unset the variable)"
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


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _entries(value: str) -> list[str]:
    return [entry.strip() for entry in value.split(",") if entry.strip()]
