"""The verification function in process: database round trips, cache and revocation, rate
limits and usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.outcomes import Outcome
from app.auth.presentation import Presentation
from app.auth.principal import Caller
from app.auth.secret import generate_secret, hash_secret
from app.keys import revocation, schemas, service
from app.keys.cache import KeyCache, KeyRecord
from app.kit.db import session_scope
from app.kit.ratelimit import Budget, rate_limit_item
from app.models.keys import ApiKey
from app.models.usage import UsageBucket
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, count_statements, make_key


def admin(runtime: Runtime, tenant: Tenant) -> Caller:
    return Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)


async def verify(
    runtime: Runtime, secret: str, scopes: tuple[str, ...] = (), operation: str = "test"
) -> Outcome:
    verification = await runtime.verifier.verify(
        Presentation.of(secret), required_scopes=scopes, operation=operation
    )
    return verification.outcome


async def revoke(runtime: Runtime, tenant: Tenant, key_id: str) -> None:
    async with session_scope(runtime.sessionmaker) as session:
        revoked = await revocation.revoke_key(
            session, admin(runtime, tenant), key_id, broadcast=runtime.broadcast
        )
        assert isinstance(revoked, ApiKey)


async def key_with_rate_limit(
    runtime: Runtime, tenant: Tenant, requests: int, per_seconds: int = 60
) -> IssuedKey:
    async with session_scope(runtime.sessionmaker) as session:
        created = await service.create_key(
            session,
            admin(runtime, tenant),
            schemas.KeyCreate(
                name="limited",
                scopes=["read:charge_points"],
                rate_limit=schemas.RateLimit(requests, per_seconds),
            ),
            catalogue=runtime.catalogue,
            key_prefix=runtime.settings.key_prefix,
            broadcast=runtime.broadcast,
        )
    assert isinstance(created, schemas.KeyCreated), created
    return IssuedKey(created.api_key.id, created.secret, created.api_key.hint)


async def stored_last_used_at(runtime: Runtime, key_id: str) -> datetime | None:
    async with runtime.sessionmaker() as session:
        row = await session.get(ApiKey, key_id)
        assert row is not None
        return row.last_used_at


# --- database round trips ----------------------------------------------------------------------


async def test_cached_verification_makes_no_database_round_trip(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "hot")
    assert await verify(runtime, key.secret) is Outcome.VALID

    with count_statements(runtime.engine) as log:
        outcomes = [await verify(runtime, key.secret, ("read:charge_points",)) for _ in range(10)]

    assert outcomes == [Outcome.VALID] * 10
    assert len(log) == 0, log.statements


async def test_cache_miss_makes_exactly_one_statement(runtime: Runtime, tenant: Tenant) -> None:
    key = await make_key(runtime, tenant, "cold")

    with count_statements(runtime.engine) as log:
        outcome = await verify(runtime, key.secret)

    assert outcome is Outcome.VALID
    assert len(log) == 1, log.statements


async def test_unknown_key_is_looked_up_once_then_answered_from_the_negative_cache(
    runtime: Runtime, tenant: Tenant
) -> None:
    unknown = generate_secret(runtime.settings.key_prefix)

    with count_statements(runtime.engine) as first:
        assert await verify(runtime, unknown) is Outcome.UNKNOWN
    with count_statements(runtime.engine) as repeated:
        outcomes = [await verify(runtime, unknown) for _ in range(10)]

    assert len(first) == 1, first.statements
    assert outcomes == [Outcome.UNKNOWN] * 10
    assert len(repeated) == 0, repeated.statements


@pytest.mark.parametrize(
    "value",
    ["", "kh_short", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", '"quoted"', "$API_KEY"],
)
async def test_key_refused_by_its_shape_makes_no_database_round_trip(
    runtime: Runtime, tenant: Tenant, value: str
) -> None:
    with count_statements(runtime.engine) as log:
        outcome = await verify(runtime, value)

    assert outcome is not Outcome.VALID
    assert outcome is not Outcome.UNKNOWN
    assert len(log) == 0, log.statements


async def test_key_with_a_bad_checksum_makes_no_database_round_trip(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "typo")
    typo = key.secret[:-1] + ("a" if key.secret[-1] != "a" else "b")

    with count_statements(runtime.engine) as log:
        outcome = await verify(runtime, typo)

    assert outcome is Outcome.MALFORMED
    assert len(log) == 0, log.statements


# --- revocation and the cache ------------------------------------------------------------------


async def test_revocation_invalidates_the_cache_at_commit(runtime: Runtime, tenant: Tenant) -> None:
    key = await make_key(runtime, tenant, "to revoke")
    assert await verify(runtime, key.secret) is Outcome.VALID  # now cached

    await revoke(runtime, tenant, key.id)

    assert await verify(runtime, key.secret) is Outcome.REVOKED


async def test_revocation_does_not_invalidate_before_commit(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "to revoke")
    assert await verify(runtime, key.secret) is Outcome.VALID  # now cached
    generation = runtime.cache.generation

    async with session_scope(runtime.sessionmaker) as session:
        await revocation.revoke_key(
            session, admin(runtime, tenant), key.id, broadcast=runtime.broadcast
        )
        assert runtime.cache.generation == generation
    assert runtime.cache.generation > generation


async def test_revocation_that_rolls_back_leaves_the_key_valid_and_cached(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "kept")
    assert await verify(runtime, key.secret) is Outcome.VALID  # now cached

    async def revoke_then_abandon() -> None:
        async with session_scope(runtime.sessionmaker) as session:
            await revocation.revoke_key(
                session, admin(runtime, tenant), key.id, broadcast=runtime.broadcast
            )
            raise RuntimeError("abandon the unit of work")

    with pytest.raises(RuntimeError, match="abandon"):
        await revoke_then_abandon()

    with count_statements(runtime.engine) as log:
        assert await verify(runtime, key.secret) is Outcome.VALID
    assert len(log) == 0, "the cache entry survived the rolled-back revocation"
    runtime.cache.clear()
    assert await verify(runtime, key.secret) is Outcome.VALID


def _record(key_id: str) -> KeyRecord:
    return KeyRecord(
        id=key_id,
        organization_id="org_x",
        name="k",
        hint="kh_…",
        scopes=frozenset({"read:charge_points"}),
        expires_at=None,
        revoked_at=None,
        rate_limit=Budget.of(rate_limit_item(10, 60), key_id),
        expires_ts=None,
    )


def test_cache_does_not_keep_a_record_read_before_an_invalidation() -> None:
    cache = KeyCache(max_entries=10, negative_ttl_seconds=30, negative_max_entries=10)
    generation = cache.generation  # a lookup starts...
    cache.invalidate_key("key_1")  # ...the key is revoked meanwhile...

    cache.put("hash_1", _record("key_1"), generation)  # ...and the stale read comes back

    assert cache.get("hash_1", ttl_seconds=60) is None


def test_cache_does_not_remember_as_unknown_a_key_read_before_an_invalidation() -> None:
    cache = KeyCache(max_entries=10, negative_ttl_seconds=30, negative_max_entries=10)
    generation = cache.generation
    cache.clear()

    cache.remember_unknown("hash_1", generation)

    assert not cache.is_known_unknown("hash_1")


def test_cache_keeps_a_record_read_in_the_current_generation() -> None:
    cache = KeyCache(max_entries=10, negative_ttl_seconds=30, negative_max_entries=10)
    record = _record("key_1")

    cache.put("hash_1", record, cache.generation)

    assert cache.get("hash_1", ttl_seconds=60) is record


async def test_lookup_that_raced_a_revocation_does_not_cache_the_stale_record(
    runtime: Runtime, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await make_key(runtime, tenant, "raced")
    real_sessionmaker = runtime.sessionmaker

    @asynccontextmanager
    async def read_then_revoke() -> AsyncIterator[AsyncSession]:
        # The verifier reads the key while it is still valid; the revocation commits (and
        # invalidates) after that read, before the verifier fills the cache.
        async with real_sessionmaker() as session:
            yield session
        await revoke(runtime, tenant, key.id)

    monkeypatch.setattr(runtime.verifier, "_sessionmaker", read_then_revoke)
    assert await verify(runtime, key.secret) is Outcome.VALID  # read before the revocation
    monkeypatch.setattr(runtime.verifier, "_sessionmaker", real_sessionmaker)

    assert runtime.cache.get(hash_secret(key.secret), ttl_seconds=60) is None
    assert await verify(runtime, key.secret) is Outcome.REVOKED


# --- rate limits -------------------------------------------------------------------------------


async def test_key_rate_limit_set_at_creation_is_honoured(runtime: Runtime, tenant: Tenant) -> None:
    key = await key_with_rate_limit(runtime, tenant, requests=2)

    outcomes = [await verify(runtime, key.secret) for _ in range(3)]

    assert outcomes == [Outcome.VALID, Outcome.VALID, Outcome.RATE_LIMITED]


async def test_rate_limited_verification_reports_limit_and_retry(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await key_with_rate_limit(runtime, tenant, requests=1, per_seconds=30)
    await verify(runtime, key.secret)

    verification = await runtime.verifier.verify(Presentation.of(key.secret))

    assert verification.outcome is Outcome.RATE_LIMITED
    assert verification.ratelimit is not None
    assert verification.ratelimit.limit == 1
    assert verification.ratelimit.remaining == 0
    assert 1 <= verification.ratelimit.retry_after <= 30
    assert "rate limit of 1 requests" in verification.message


async def test_refusal_before_the_rate_limit_spends_no_budget(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await key_with_rate_limit(runtime, tenant, requests=2)
    refused = [await verify(runtime, key.secret, ("write:billing",)) for _ in range(5)]

    outcomes = [await verify(runtime, key.secret) for _ in range(3)]

    assert refused == [Outcome.INSUFFICIENT_SCOPE] * 5
    assert outcomes == [Outcome.VALID, Outcome.VALID, Outcome.RATE_LIMITED]


@pytest.fixture
async def strict_runtime(runtime: Runtime) -> AsyncIterator[Runtime]:
    """A second runtime on the same database whose default limit is 2 requests a minute."""
    settings = runtime.settings.model_copy(
        update={"default_rate_limit_requests": 2, "default_rate_limit_per_seconds": 60}
    )
    strict = Runtime.create(settings)
    yield strict
    await strict.engine.dispose()


async def test_key_without_its_own_limit_gets_the_default_from_settings(
    strict_runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(strict_runtime, tenant, "default limit")

    outcomes = [await verify(strict_runtime, key.secret) for _ in range(3)]

    assert outcomes == [Outcome.VALID, Outcome.VALID, Outcome.RATE_LIMITED]


async def test_key_with_its_own_limit_ignores_the_default(
    strict_runtime: Runtime, tenant: Tenant
) -> None:
    key = await key_with_rate_limit(strict_runtime, tenant, requests=5)

    outcomes = [await verify(strict_runtime, key.secret) for _ in range(5)]

    assert outcomes == [Outcome.VALID] * 5


# --- usage ---------------------------------------------------------------------------------------


async def test_valid_verification_notes_last_use_in_memory_only(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "used")
    before = datetime.now(UTC)

    with count_statements(runtime.engine) as log:
        assert await verify(runtime, key.secret) is Outcome.VALID

    pending = runtime.recorder.pending_last_used(key.id)
    assert pending is not None
    assert before - timedelta(seconds=1) <= pending <= datetime.now(UTC)
    assert len(log) == 1, "only the lookup; the use is not written on the hot path"
    assert await stored_last_used_at(runtime, key.id) is None


async def test_flush_writes_last_used_at(runtime: Runtime, tenant: Tenant) -> None:
    key = await make_key(runtime, tenant, "used")
    assert await verify(runtime, key.secret) is Outcome.VALID
    pending = runtime.recorder.pending_last_used(key.id)
    assert pending is not None

    await runtime.recorder.flush()

    stored = await stored_last_used_at(runtime, key.id)
    assert stored is not None
    assert abs(stored - pending) < timedelta(milliseconds=1)
    assert runtime.recorder.pending_last_used(key.id) is None


async def test_refused_verification_does_not_record_last_use(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "refused")

    assert await verify(runtime, key.secret, ("write:billing",)) is Outcome.INSUFFICIENT_SCOPE
    await runtime.recorder.flush()

    assert runtime.recorder.pending_last_used(key.id) is None
    assert await stored_last_used_at(runtime, key.id) is None


async def test_refused_use_of_a_known_key_is_counted_with_its_outcome(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "refused")
    assert await verify(runtime, key.secret, ("write:billing",), "GET /x") is (
        Outcome.INSUFFICIENT_SCOPE
    )

    await runtime.recorder.flush()

    async with runtime.sessionmaker() as session:
        outcomes = (
            await session.exec(
                select(UsageBucket.outcome).where(col(UsageBucket.api_key_id) == key.id)
            )
        ).all()
    assert set(outcomes) == {"INSUFFICIENT_SCOPE"}


async def test_batch_of_valid_verifications_writes_last_used_once_per_key(
    runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "busy")
    for _ in range(20):
        assert await verify(runtime, key.secret) is Outcome.VALID

    with count_statements(runtime.engine) as log:
        await runtime.recorder.flush()
    writes = [s for s in log.statements if s.lstrip().upper().startswith("UPDATE")]

    assert len(writes) == 1, log.statements
