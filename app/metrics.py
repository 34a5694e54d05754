"""Process metrics (Prometheus), served at ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter

REJECTIONS = Counter(
    "keyhouse_key_rejections",
    "Keys refused by verification, by reason (unattributable ones included).",
    ["reason"],
)
