"""The order of verification's checks (app/keys/verification.py): format → known → the key's
standing (revoked, superseded, expired, disabled) → IP allowlist → scopes → rate limit → credits.
Each refusal is the first that applies, and a request refused at one step spends nothing at the
later ones: no rate-limit budget, no credit."""

from __future__ import annotations

from typing import Any

import pytest

from app.auth.network import parse_address
from app.auth.presentation import Presentation
from app.auth.principal import Caller
from app.keys import revocation, schemas, update
from app.kit.db import session_scope
from app.models.keys import ApiKey
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, make_key

ALLOWED = parse_address("203.0.113.7")
OUTSIDE = parse_address("198.51.100.1")
LIMIT = 5
CREDITS = 3


def admin(runtime: Runtime, tenant: Tenant) -> Caller:
    return Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)


async def change(runtime: Runtime, tenant: Tenant, key_id: str, **fields: Any) -> None:
    async with session_scope(runtime.sessionmaker) as session:
        result = await update.update_key(
            session,
            admin(runtime, tenant),
            schemas.KeyUpdate(key_id=key_id, **fields),
            catalogue=runtime.catalogue,
            broadcast=runtime.broadcast,
        )
    assert isinstance(result, ApiKey), result


async def use(
    runtime: Runtime,
    secret: str,
    *,
    scopes: tuple[str, ...] = ("read:charge_points",),
    client: Any = ALLOWED,
    cost: int | None = 1,
) -> str:
    verification = await runtime.verifier.verify(
        Presentation.of(secret), required_scopes=scopes, client=client, cost=cost
    )
    return verification.outcome.value


async def credits_left(runtime: Runtime, key_id: str) -> int | None:
    async with runtime.sessionmaker() as session:
        row = await session.get(ApiKey, key_id)
        assert row is not None
        return row.credits_remaining


async def budget_left(runtime: Runtime, secret: str) -> int:
    """Spends one unit of the budget to read what was left before it (cost 0: no credit)."""
    verification = await runtime.verifier.verify(Presentation.of(secret), client=ALLOWED, cost=0)
    assert verification.ratelimit is not None, verification
    return verification.ratelimit.remaining + 1


@pytest.fixture
async def controlled(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    """A key with every control: an allowlist, a rate limit and credits."""
    key = await make_key(runtime, tenant, "controlled", ["read:charge_points"])
    await change(
        runtime,
        tenant,
        key.id,
        ip_allowlist=["203.0.113.0/24"],
        rate_limit=schemas.RateLimit(LIMIT, 3600),
        credits=schemas.Credits(CREDITS),
    )
    return key


async def assert_nothing_spent(runtime: Runtime, key: IssuedKey) -> None:
    assert await credits_left(runtime, key.id) == CREDITS
    assert await budget_left(runtime, key.secret) == LIMIT


async def test_disabled_is_refused_before_the_allowlist_scopes_budget_and_credits(
    runtime: Runtime, tenant: Tenant, controlled: IssuedKey
) -> None:
    await change(runtime, tenant, controlled.id, enabled=False)

    refused = await use(runtime, controlled.secret, scopes=("write:billing",), client=OUTSIDE)

    assert refused == "DISABLED"
    await change(runtime, tenant, controlled.id, enabled=True)
    await assert_nothing_spent(runtime, controlled)


async def test_revoked_is_told_before_disabled(
    runtime: Runtime, tenant: Tenant, controlled: IssuedKey
) -> None:
    await change(runtime, tenant, controlled.id, enabled=False)
    async with session_scope(runtime.sessionmaker) as session:
        await revocation.revoke_key(
            session, admin(runtime, tenant), controlled.id, broadcast=runtime.broadcast
        )

    assert await use(runtime, controlled.secret) == "REVOKED"
    assert await credits_left(runtime, controlled.id) == CREDITS


async def test_an_address_outside_the_allowlist_is_refused_before_scopes_budget_and_credits(
    runtime: Runtime, controlled: IssuedKey
) -> None:
    refused = await use(runtime, controlled.secret, scopes=("write:billing",), client=OUTSIDE)

    assert refused == "IP_NOT_ALLOWED"
    await assert_nothing_spent(runtime, controlled)


async def test_an_unknown_address_is_outside_every_allowlist(
    runtime: Runtime, controlled: IssuedKey
) -> None:
    verification = await runtime.verifier.verify(
        Presentation.of(controlled.secret), client=None, cost=1
    )

    assert verification.outcome.value == "IP_NOT_ALLOWED"
    assert '"ip"' in verification.hint
    await assert_nothing_spent(runtime, controlled)


async def test_the_refusal_names_the_address_seen_never_the_list(
    runtime: Runtime, controlled: IssuedKey
) -> None:
    verification = await runtime.verifier.verify(
        Presentation.of(controlled.secret), client=OUTSIDE, cost=1
    )

    text = verification.message + verification.hint
    assert "198.51.100.1" in text
    assert "203.0.113" not in text


async def test_a_missing_scope_is_refused_before_budget_and_credits(
    runtime: Runtime, controlled: IssuedKey
) -> None:
    assert await use(runtime, controlled.secret, scopes=("write:billing",)) == (
        "INSUFFICIENT_SCOPE"
    )
    await assert_nothing_spent(runtime, controlled)


async def test_a_rate_limited_request_spends_no_credit(
    runtime: Runtime, tenant: Tenant, controlled: IssuedKey
) -> None:
    await change(runtime, tenant, controlled.id, credits=schemas.Credits(100))
    outcomes = [await use(runtime, controlled.secret) for _ in range(LIMIT + 3)]

    assert outcomes == ["VALID"] * LIMIT + ["RATE_LIMITED"] * 3
    assert await credits_left(runtime, controlled.id) == 100 - LIMIT


async def test_exhausted_credits_are_the_last_refusal(
    runtime: Runtime, controlled: IssuedKey
) -> None:
    outcomes = [await use(runtime, controlled.secret) for _ in range(CREDITS + 1)]

    assert outcomes == ["VALID"] * CREDITS + ["CREDITS_EXHAUSTED"]
    assert await credits_left(runtime, controlled.id) == 0


async def test_a_key_without_controls_is_checked_as_before(
    runtime: Runtime, tenant: Tenant
) -> None:
    plain = await make_key(runtime, tenant, "plain")

    assert await use(runtime, plain.secret, client=None) == "VALID"
