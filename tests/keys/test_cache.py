"""The verification cache drops one organization's keys at once (a suspension or resumption),
and only those, without letting a read that raced it put a stale entry back."""

from __future__ import annotations

from dataclasses import replace

from app.keys.cache import KeyCache, KeyRecord
from app.kit.ratelimit import Budget, rate_limit_item


def record(key_id: str, organization_id: str) -> KeyRecord:
    return KeyRecord(
        id=key_id,
        organization_id=organization_id,
        name="k",
        hint="kh_…",
        scopes=frozenset({"read:charge_points"}),
        expires_at=None,
        revoked_at=None,
        rate_limit=Budget.of(rate_limit_item(10, 60), key_id),
        expires_ts=None,
    )


def filled() -> KeyCache:
    cache = KeyCache(max_entries=10, negative_ttl_seconds=30, negative_max_entries=10)
    for number, organization in enumerate(["org_a", "org_a", "org_b"]):
        cache.put(f"hash_{number}", record(f"key_{number}", organization), cache.generation)
    return cache


def test_an_organizations_entries_are_dropped_and_no_others() -> None:
    cache = filled()

    cache.invalidate_organization("org_a")

    assert cache.get("hash_0", ttl_seconds=60) is None
    assert cache.get("hash_1", ttl_seconds=60) is None
    assert cache.get("hash_2", ttl_seconds=60) is not None
    assert len(cache) == 1


def test_a_read_that_raced_the_suspension_is_not_kept() -> None:
    cache = filled()
    generation = cache.generation  # a lookup starts...
    cache.invalidate_organization("org_a")  # ...the organization is suspended meanwhile...

    cache.put("hash_0", record("key_0", "org_a"), generation)  # ...the stale read comes back

    assert cache.get("hash_0", ttl_seconds=60) is None


def test_entries_loaded_again_are_dropped_by_the_next_change() -> None:
    cache = filled()
    cache.invalidate_organization("org_a")
    suspended = replace(record("key_0", "org_a"), organization_suspended=True)
    cache.put("hash_0", suspended, cache.generation)
    cache.invalidate_key("key_2")

    cache.invalidate_organization("org_a")  # resumed

    assert len(cache) == 0


def test_an_evicted_entry_leaves_nothing_behind() -> None:
    cache = KeyCache(max_entries=1, negative_ttl_seconds=30, negative_max_entries=10)
    cache.put("hash_0", record("key_0", "org_a"), cache.generation)
    cache.put("hash_1", record("key_1", "org_b"), cache.generation)  # evicts hash_0

    cache.invalidate_organization("org_a")

    assert cache.get("hash_1", ttl_seconds=60) is not None
    assert cache._hashes_by_organization == {"org_b": {"hash_1"}}
