"""The README's configuration table, written from :class:`Settings` itself: every setting, its
environment variable and its default as the code has them, and what it does.

``python -m app.settings_table`` rewrites the table in README.md (``make settings-table``);
tests/test_settings_table.py fails when a setting has no description here or the README's table
differs from what this writes.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from app.config import Settings

BEGIN = "<!-- settings table: written by `make settings-table` from app/config.py -->"
END = "<!-- end of settings table -->"

# What each setting does, in the reader's words. A new setting needs a line here (a test says so).
DESCRIPTIONS: dict[str, str] = {
    "database_url": "The database: `sqlite+aiosqlite:///PATH` or "
    "`postgresql+asyncpg://USER:PASSWORD@HOST:5432/DATABASE`; any other form is refused at start.",
    "redis_url": "Redis (`redis://HOST:6379/0`), for rate limits shared by every instance and "
    "worker and the revocation broadcast; unset: in-memory limits, no broadcast. Required by "
    "`--workers` above 1.",
    "key_prefix": "The prefix of new keys (`kh_…`): 2 to 10 lower-case letters and digits.",
    "product_scopes": "Your product's scopes, a JSON object of name to description; the default "
    "is a charging-network API's table (`read:charge_points`…).",
    "default_rate_limit_requests": "Requests per window for a key without a limit of its own.",
    "default_rate_limit_per_seconds": "That window, in seconds.",
    "cache_ttl_seconds": "How long a verified key stays in a process's cache while the "
    "revocation broadcast is live.",
    "cache_ttl_without_broadcast_seconds": "The same without a live broadcast: the longest a "
    "revocation made elsewhere can go unseen.",
    "cache_max_entries": "Keys held in each process's cache.",
    "negative_cache_ttl_seconds": "How long a well-formed unknown key is remembered as unknown.",
    "negative_cache_max_entries": "Unknown keys remembered.",
    "max_concurrent_key_lookups": "Database lookups of uncached keys at once, per process.",
    "sqlite_pool_size": "Connections to a SQLite database (at least 2).",
    "usage_flush_interval_seconds": "How often counted usage is written to the database.",
    "usage_flush_max_buckets": "Usage buckets waiting in memory that start a flush early.",
    "usage_max_labels_per_key_hour": "Operation labels counted per key and hour (per process); "
    "further ones are counted under `(other)`.",
    "usage_retention_minute_hours": "Hours of minute buckets kept.",
    "usage_retention_hour_days": "Days of hour buckets kept.",
    "usage_retention_day_days": "Days of day buckets kept.",
    "secret_key": "The server secret, 64 hex characters (`keyhouse secret generate`), the same "
    "on every instance. Required with PostgreSQL; on SQLite created on first run in "
    "`<database>.secret`. See docs/deploy.md.",
    "secret_key_previous": "During a rotation of the server secret, the one before: what it "
    "sealed (idempotency records, 24 hours of them at most) still opens. Remove it a day later.",
    "service_token": "When set, `/v1/keys/verify` and `/v1/auth` require it in "
    "`X-Keyhouse-Service-Token`.",
    "trusted_proxies": "Proxies (comma-separated addresses or CIDR blocks) whose `X-Forwarded-For` "
    "/ `X-Real-IP` name the caller's address, for IP allowlists; uvicorn's `forwarded_allow_ips` "
    "follows it. Empty: the connection's peer is the caller.",
    "deliver_webhooks": "Whether this instance delivers webhooks and writes expiry notices "
    "(instances share the work); off for one that should only answer requests.",
    "webhook_allow_http_hosts": "Hosts (comma-separated) webhooks may reach over plain http and "
    "at private or loopback addresses: a receiver inside your own network.",
    "webhook_timeout_seconds": "How long a webhook attempt may take to connect and be answered.",
    "webhook_poll_interval_seconds": "How often an instance looks for events other instances "
    "committed (its own wake it at once).",
    "webhook_lease_seconds": "How long an instance holds a delivery it attempts; after a crash "
    "another takes it over.",
    "webhook_max_concurrency": "Webhook attempts in flight at once, per instance.",
    "expiry_notice_interval_seconds": "How often keys about to expire, or expired, are looked for.",
    "leak_report_public_keys": "The public keys secret scanners sign leak reports with, as GitHub "
    'publishes them (`{"public_keys": [...]}`, PEM keys); unset: `/v1/keys/leaked` answers 404.',
    "public_url": "The address people reach keyhouse at (`https://keys.example.com`), for the "
    "dashboard sign-in links the operator API makes; unset: the address the request came to.",
    "dashboard_sign_in_hours": "How long a dashboard sign-in made with an operator's link lasts "
    "(1 to 24 hours).",
    "graphql_max_depth": "Deepest GraphQL selection admitted.",
    "graphql_max_tokens": "Most tokens in a GraphQL document.",
    "graphql_max_aliases": "Most aliases in a GraphQL document.",
    "graphql_max_body_bytes": "Largest `/graphql` body (HTTP 413 past it).",
    "graphql_max_cost": "Highest static cost of a GraphQL operation.",
    "plane": "What a process answers: `data`, `control` or `all` (as `keyhouse serve --plane`).",
    "log_level": "`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`.",
    "log_format": "`text`, or `json`: one JSON object per line (time, level, logger, message, "
    "request id, organization id).",
    "metrics_directory": "Where the workers of `--workers` keep their metrics for `/metrics` to "
    "sum (emptied at start); unset: a temporary directory.",
}


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "—"  # the description says what it is
    value: Any = field.default
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def markdown() -> str:
    """The table, between its markers."""
    rows = ["| variable | default | what it is |", "|---|---|---|"]
    prefix = str(Settings.model_config.get("env_prefix", ""))
    for name, field in Settings.model_fields.items():
        variable = f"`{prefix}{name.upper()}`"
        rows.append(f"| {variable} | {_default(field)} | {DESCRIPTIONS[name]} |")
    return "\n".join([BEGIN, *rows, END])


def rewrite(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`markdown`."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + markdown() + readme[end:]


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(rewrite(path.read_text()))
