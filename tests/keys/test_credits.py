"""Credits: each valid use spends some, exactly, whichever instance answers; a refill resets the
balance at the period's boundary (UTC) without a write per request; an update replaces it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.auth.presentation import Presentation
from app.auth.principal import Caller
from app.config import Settings
from app.keys import schemas, update
from app.keys.credits import next_refill, refill_period
from app.kit.db import session_scope
from app.models.keys import ApiKey, RefillInterval
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, count_statements, make_key, make_tenant, serving
from tests.tcp_proxy import TcpProxy, tcp_proxy


def admin(runtime: Runtime, tenant: Tenant) -> Caller:
    return Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)


async def give_credits(
    runtime: Runtime, tenant: Tenant, key_id: str, credits: schemas.Credits | None
) -> None:
    async with session_scope(runtime.sessionmaker) as session:
        result = await update.update_key(
            session,
            admin(runtime, tenant),
            schemas.KeyUpdate(key_id=key_id, credits=credits),
            catalogue=runtime.catalogue,
            broadcast=runtime.broadcast,
        )
    assert isinstance(result, ApiKey), result


async def stored(runtime: Runtime, key_id: str) -> tuple[int | None, str | None]:
    async with runtime.sessionmaker() as session:
        row = await session.get(ApiKey, key_id)
        assert row is not None
        return row.credits_remaining, row.credits_period


async def verify(client: httpx.AsyncClient, secret: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/keys/verify", json={"key": secret, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture
async def metered(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    key = await make_key(runtime, tenant, "metered")
    await give_credits(runtime, tenant, key.id, schemas.Credits(25))
    return key


# --- one process, spent in the database -----------------------------------------------------------


async def test_25_credits_and_200_concurrent_uses_are_exactly_25_valid(
    client: httpx.AsyncClient, runtime: Runtime, metered: IssuedKey
) -> None:
    answers = await asyncio.gather(*(verify(client, metered.secret) for _ in range(200)))

    assert Counter(answer["code"] for answer in answers) == {
        "VALID": 25,
        "CREDITS_EXHAUSTED": 175,
    }
    assert await stored(runtime, metered.id) == (0, "")


async def test_a_use_answers_what_is_left_and_a_refused_one_says_so(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, metered: IssuedKey
) -> None:
    await give_credits(runtime, tenant, metered.id, schemas.Credits(1))

    valid = await verify(client, metered.secret)
    refused = await verify(client, metered.secret)

    assert valid["credits"] == {"remaining": 0, "refillAt": None}
    assert (refused["valid"], refused["code"]) == (False, "CREDITS_EXHAUSTED")
    assert refused["credits"] == {"remaining": 0, "refillAt": None}
    assert "ask the organization" in refused["hint"]
    assert refused["keyId"] is None


async def test_cost_spends_that_many_and_zero_only_checks(
    client: httpx.AsyncClient, runtime: Runtime, metered: IssuedKey
) -> None:
    assert (await verify(client, metered.secret, cost=10))["credits"]["remaining"] == 15
    assert (await verify(client, metered.secret, cost=0))["credits"]["remaining"] == 15
    too_dear = await verify(client, metered.secret, cost=16)
    assert too_dear["code"] == "CREDITS_EXHAUSTED"
    assert "this request costs 16" in too_dear["message"]
    assert (await verify(client, metered.secret, cost=15))["credits"]["remaining"] == 0
    # At 0 the key is refused, also to a use that would spend nothing.
    assert (await verify(client, metered.secret, cost=0))["code"] == "CREDITS_EXHAUSTED"
    assert await stored(runtime, metered.id) == (0, "")


async def test_a_balance_from_an_earlier_period_is_reset_to_the_refill_amount_not_added_to(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, metered: IssuedKey
) -> None:
    refill = schemas.Refill(10, RefillInterval.DAILY)
    await give_credits(runtime, tenant, metered.id, schemas.Credits(4, refill))
    # As if the last use were long ago: yesterday's balance.
    async with runtime.engine.begin() as connection:
        await connection.execute(
            text("UPDATE api_keys SET credits_period = '2000-01-01' WHERE id = :id"),
            {"id": metered.id},
        )
    runtime.cache.clear()

    answer = await verify(client, metered.secret)

    today = refill_period(RefillInterval.DAILY, datetime.now(UTC))
    assert answer["credits"]["remaining"] == 9
    assert await stored(runtime, metered.id) == (9, today)


async def test_an_exhausted_key_is_told_when_its_next_refill_comes(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, metered: IssuedKey
) -> None:
    refill = schemas.Refill(10, RefillInterval.MONTHLY)
    await give_credits(runtime, tenant, metered.id, schemas.Credits(0, refill))

    refused = await verify(client, metered.secret)

    due = next_refill(RefillInterval.MONTHLY, datetime.now(UTC))
    assert due is not None
    assert due.day == 1
    assert refused["credits"]["refillAt"] == due.isoformat()
    assert due.strftime("%Y-%m-%dT00:00:00Z") in refused["hint"]


def test_refills_fall_on_the_next_utc_midnight_and_first_of_the_month() -> None:
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)

    assert next_refill(RefillInterval.DAILY, december) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_refill(RefillInterval.MONTHLY, december) == datetime(2027, 1, 1, tzinfo=UTC)
    assert refill_period(RefillInterval.MONTHLY, december) == "2026-12"
    assert refill_period(None, december) == ""


async def test_an_update_replaces_the_balance(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, metered: IssuedKey
) -> None:
    await verify(client, metered.secret, cost=20)

    await give_credits(runtime, tenant, metered.id, schemas.Credits(3))

    assert (await verify(client, metered.secret))["credits"]["remaining"] == 2


async def test_a_key_without_credits_writes_nothing_and_a_spend_is_one_statement(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, metered: IssuedKey
) -> None:
    plain = await make_key(runtime, tenant, "plain")
    for key in (plain, metered):
        await verify(client, key.secret)  # cached

    with count_statements(runtime.engine) as plain_statements:
        await verify(client, plain.secret)
    with count_statements(runtime.engine) as spend_statements:
        await verify(client, metered.secret)

    assert len(plain_statements) == 0
    assert len(spend_statements) == 1, spend_statements.statements
    assert spend_statements.statements[0].lstrip().upper().startswith("UPDATE")


async def test_removing_credits_makes_the_key_unlimited(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, metered: IssuedKey
) -> None:
    await give_credits(runtime, tenant, metered.id, schemas.Credits(0))
    assert (await verify(client, metered.secret))["code"] == "CREDITS_EXHAUSTED"

    await give_credits(runtime, tenant, metered.id, None)

    answer = await verify(client, metered.secret)
    assert (answer["code"], answer["credits"]) == ("VALID", None)


async def test_graphql_requests_spend_no_credits(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await give_credits(runtime, tenant, tenant.admin_key_id, schemas.Credits(0))

    response = await client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"X-API-Key": tenant.admin_key}
    )

    assert response.status_code == 200, response.text
    assert await stored(runtime, tenant.admin_key_id) == (0, "")


# --- several instances, spent in Redis ---------------------------------------------------------


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    with tcp_proxy(redis_url) as proxy:
        yield proxy


def with_redis(settings: Settings, redis_url: str) -> Settings:
    return settings.model_copy(update={"redis_url": redis_url})


async def test_two_instances_spending_in_redis_sell_exactly_the_credits(
    settings: Settings, redis_url: str
) -> None:
    async with (
        serving(with_redis(settings, redis_url)) as (a, client_a),
        serving(with_redis(settings, redis_url)) as (_, client_b),
    ):
        tenant = await make_tenant(a, "Acme")
        key = await make_key(a, tenant, "metered")
        await give_credits(a, tenant, key.id, schemas.Credits(25))
        clients = (client_a, client_b)

        answers = await asyncio.gather(*(verify(clients[n % 2], key.secret) for n in range(200)))

        assert Counter(answer["code"] for answer in answers) == {
            "VALID": 25,
            "CREDITS_EXHAUSTED": 175,
        }
        # Spent in Redis, not yet in the database: no write per request.
        assert (await stored(a, key.id))[0] == 25
    # Both stopped: each wrote back what it saw, and the lowest balance stands.
    async with serving(settings) as (c, _):
        assert await stored(c, key.id) == (0, "")


async def test_an_update_replaces_the_balance_redis_holds(
    settings: Settings, redis_url: str
) -> None:
    async with serving(with_redis(settings, redis_url)) as (runtime, client):
        tenant = await make_tenant(runtime, "Acme")
        key = await make_key(runtime, tenant, "metered")
        await give_credits(runtime, tenant, key.id, schemas.Credits(5))
        await verify(client, key.secret, cost=5)
        assert (await verify(client, key.secret))["code"] == "CREDITS_EXHAUSTED"

        await give_credits(runtime, tenant, key.id, schemas.Credits(2))

        assert (await verify(client, key.secret))["credits"]["remaining"] == 1
        await runtime.ledger.write_back()
        assert (await stored(runtime, key.id))[0] == 1


async def test_with_redis_unreachable_a_key_with_credits_is_unavailable_and_others_still_work(
    settings: Settings, redis_url: str, redis_proxy: TcpProxy
) -> None:
    async with serving(with_redis(settings, redis_proxy.url(redis_url))) as (runtime, client):
        tenant = await make_tenant(runtime, "Acme")
        key = await make_key(runtime, tenant, "metered")
        plain = await make_key(runtime, tenant, "plain")
        await give_credits(runtime, tenant, key.id, schemas.Credits(5))

        redis_proxy.cut()
        response = await client.post("/v1/keys/verify", json={"key": key.secret})

        assert response.status_code == 503
        assert response.json()["code"] == "UNAVAILABLE"
        assert "credit" in response.json()["message"]
        assert (await verify(client, plain.secret))["code"] == "VALID"
        redis_proxy.heal()
        assert (await verify(client, key.secret))["credits"]["remaining"] == 4


async def test_an_in_process_verification_counts_refusals_in_usage(
    runtime: Runtime, tenant: Tenant, metered: IssuedKey
) -> None:
    await give_credits(runtime, tenant, metered.id, schemas.Credits(0))
    await runtime.verifier.verify(Presentation.of(metered.secret), operation="sell", cost=1)

    await runtime.recorder.flush()

    async with runtime.engine.connect() as connection:
        outcomes = (
            await connection.execute(
                text("SELECT outcome FROM usage_buckets WHERE api_key_id = :id"),
                {"id": metered.id},
            )
        ).scalars()
        assert set(outcomes) == {"CREDITS_EXHAUSTED"}
