"""Process metrics (Prometheus), served at ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter

REJECTIONS = Counter(
    "keyhouse_key_rejections",
    "Keys refused by verification, by reason (unattributable ones included).",
    ["reason"],
)

USAGE_REFUSED = Counter(
    "keyhouse_usage_refused_uses",
    "Key uses whose usage bucket could not be stored (an unstorable label, or a row the database"
    " refused): set aside, logged once and never retried.",
)
