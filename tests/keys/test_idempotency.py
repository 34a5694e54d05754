"""Idempotency keys on createApiKey and rotateApiKey (as Stripe does them): a client that retries
after a timeout gets the same answer, secret included, and no second key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.config import Settings
from app.keys import idempotency
from app.main import create_app
from app.runtime import Runtime
from tests.lifecycle_support import (
    CREATE_KEY,
    ROTATE_KEY,
    accepted,
    create_key,
    mutate,
    rotate_key,
    travel,
    update_policy,
)
from tests.support import IssuedKey, Tenant, make_key, snapshot


@dataclass(frozen=True)
class Mutation:
    """One of the two mutations that take an idempotency key, with a valid input for it."""

    document: str
    field: str
    input: dict[str, Any]

    async def send(self, client: httpx.AsyncClient, key: str, **changes: Any) -> dict[str, Any]:
        return await mutate(client, self.document, self.field, key, **{**self.input, **changes})


@pytest.fixture
async def integration(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    return await make_key(runtime, tenant, "integration")


@pytest.fixture(params=["createApiKey", "rotateApiKey"])
def mutation(request: pytest.FixtureRequest, integration: IssuedKey) -> Mutation:
    if request.param == "createApiKey":
        return Mutation(
            CREATE_KEY,
            "createApiKey",
            {"name": "mobile app", "scopes": ["read:charge_points"], "idempotencyKey": "req-1"},
        )
    return Mutation(
        ROTATE_KEY,
        "rotateApiKey",
        {"id": integration.id, "gracePeriodHours": 24, "idempotencyKey": "req-1"},
    )


async def test_retried_request_gets_the_same_answer_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, mutation: Mutation
) -> None:
    first = await mutation.send(client, tenant.admin_key)
    assert first["userErrors"] == [], first
    after_first = await snapshot(runtime)

    retried = await mutation.send(client, tenant.admin_key)

    assert retried == first
    assert await snapshot(runtime) == after_first


async def test_secret_given_on_a_retry_is_the_working_one(
    client: httpx.AsyncClient, tenant: Tenant, mutation: Mutation
) -> None:
    await mutation.send(client, tenant.admin_key)

    retried = await mutation.send(client, tenant.admin_key)

    body = (await accepted(client, "verify", retried["secret"])).json()
    assert body["keyId"] == retried["apiKey"]["id"]


async def test_secret_is_kept_sealed_never_in_plaintext(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, mutation: Mutation
) -> None:
    answer = await mutation.send(client, tenant.admin_key)

    async with runtime.engine.connect() as connection:
        records = (await connection.execute(text("SELECT * FROM idempotency_records"))).all()
    (record,) = records
    stored = repr(tuple(record))
    assert answer["secret"] not in stored
    # Neither is the random body of the key, nor the idempotency key that unseals it.
    assert answer["secret"].split("_", 1)[1][:20] not in stored
    assert "req-1" not in stored


def assert_refused_as_reused(payload: dict[str, Any]) -> None:
    (error,) = payload["userErrors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == "idempotencyKey"
    assert "already used for a different request" in error["message"]
    assert payload["apiKey"] is None
    assert payload["secret"] is None


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "tablet app"},
        {"scopes": ["read:billing"]},
        {"expiresInDays": 30},
        {"rateLimit": {"requests": 10, "perSeconds": 60}},
    ],
    ids=["name", "scopes", "expiry", "rate limit"],
)
async def test_creation_retried_with_a_different_input_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, changes: dict[str, Any]
) -> None:
    await create_key(client, tenant.admin_key, name="mobile app", idempotencyKey="req-1")
    before = await snapshot(runtime)

    payload = await mutate(
        client,
        CREATE_KEY,
        "createApiKey",
        tenant.admin_key,
        **{"name": "mobile app", "scopes": ["read:charge_points"], "idempotencyKey": "req-1"}
        | changes,
    )

    assert_refused_as_reused(payload)
    assert await snapshot(runtime) == before


ANOTHER_KEY = "<another key>"


@pytest.mark.parametrize(
    "changes",
    [{"gracePeriodHours": 1}, {"gracePeriodHours": 0}, {"id": ANOTHER_KEY}],
    ids=["other grace", "no grace", "another key"],
)
async def test_rotation_retried_with_a_different_input_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    integration: IssuedKey,
    changes: dict[str, Any],
) -> None:
    rotation = {"id": integration.id, "gracePeriodHours": 24, "idempotencyKey": "req-1"}
    await rotate_key(client, tenant.admin_key, **rotation)
    if changes.get("id") == ANOTHER_KEY:
        changes = {"id": (await make_key(runtime, tenant, "other")).id}
    before = await snapshot(runtime)

    payload = await mutate(
        client, ROTATE_KEY, "rotateApiKey", tenant.admin_key, **{**rotation, **changes}
    )

    assert_refused_as_reused(payload)
    assert await snapshot(runtime) == before


async def test_idempotency_key_of_a_creation_cannot_be_reused_for_a_rotation(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    await create_key(client, tenant.admin_key, name="mobile app", idempotencyKey="req-1")
    before = await snapshot(runtime)

    payload = await mutate(
        client,
        ROTATE_KEY,
        "rotateApiKey",
        tenant.admin_key,
        id=integration.id,
        idempotencyKey="req-1",
    )

    assert_refused_as_reused(payload)
    assert await snapshot(runtime) == before


@pytest.mark.parametrize("idempotency_key", ["", "x" * 256], ids=["empty", "256 characters"])
async def test_idempotency_key_of_a_bad_length_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    mutation: Mutation,
    idempotency_key: str,
) -> None:
    before = await snapshot(runtime)

    payload = await mutation.send(client, tenant.admin_key, idempotencyKey=idempotency_key)

    (error,) = payload["userErrors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == "idempotencyKey"
    assert "1 to 255 characters" in error["message"]
    assert await snapshot(runtime) == before


async def test_idempotency_key_of_255_characters_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant, mutation: Mutation
) -> None:
    payload = await mutation.send(client, tenant.admin_key, idempotencyKey="x" * 255)

    assert payload["userErrors"] == []


async def test_refused_request_does_not_use_up_its_idempotency_key(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    refused = await mutate(
        client,
        CREATE_KEY,
        "createApiKey",
        tenant.admin_key,
        name="mobile app",
        scopes=["read:everything"],
        idempotencyKey="req-1",
    )
    assert [e["code"] for e in refused["userErrors"]] == ["INVALID_SCOPE"]

    fixed = await create_key(client, tenant.admin_key, name="mobile app", idempotencyKey="req-1")

    assert fixed["secret"]


async def test_idempotency_keys_belong_to_one_organization(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    ours = await create_key(client, tenant.admin_key, name="mobile app", idempotencyKey="req-1")

    theirs = await create_key(
        client, other_tenant.admin_key, name="mobile app", idempotencyKey="req-1"
    )

    assert theirs["apiKey"]["id"] != ours["apiKey"]["id"]
    assert theirs["secret"] != ours["secret"]
    body = (await accepted(client, "verify", theirs["secret"])).json()
    assert body["organizationId"] == other_tenant.organization_id


async def test_idempotency_key_may_be_used_afresh_after_24_hours(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await create_key(client, tenant.admin_key, name="mobile app", idempotencyKey="req-1")

    travel(monkeypatch, timedelta(hours=24, minutes=1))
    later = await create_key(client, tenant.admin_key, name="tablet app", idempotencyKey="req-1")

    assert later["apiKey"]["id"] != first["apiKey"]["id"]
    assert later["apiKey"]["name"] == "tablet app"


async def test_retried_creation_under_single_active_key_reports_the_same_superseded_keys(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    bystander = await make_key(runtime, tenant, "bystander")
    await update_policy(client, tenant.admin_key, singleActiveKey=True, supersedeGraceHours=1)
    first = await create_key(client, tenant.admin_key, name="mobile app", idempotencyKey="req-1")
    assert {key["id"] for key in first["supersededApiKeys"]} == {integration.id, bystander.id}

    retried = await create_key(client, tenant.admin_key, name="mobile app", idempotencyKey="req-1")

    assert retried == first


async def test_request_sent_twice_at_once_gets_the_same_answer_and_one_new_key(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, mutation: Mutation
) -> None:
    first, second = await asyncio.gather(
        mutation.send(client, tenant.admin_key), mutation.send(client, tenant.admin_key)
    )

    assert first["userErrors"] == [], first
    assert second == first
    async with runtime.engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT id, superseded_by_key_id FROM api_keys WHERE name = :name"),
                {"name": first["apiKey"]["name"]},
            )
        ).all()
    new_id = first["apiKey"]["id"]
    previous = first.get("previousApiKey")
    # A rotated key points at the one new key, never at one that was not written.
    expected = {(new_id, None)} if previous is None else {(new_id, None), (previous["id"], new_id)}
    assert {tuple(row) for row in rows} == expected


def test_a_sealed_secret_needs_the_server_secret_as_well_as_the_idempotency_key() -> None:
    sealed = idempotency.seal("kh_secret", "deploy-2026-12-01", b"\x01" * 32)

    assert idempotency.unseal(sealed, "deploy-2026-12-01", b"\x01" * 32) == "kh_secret"
    # Whoever reads the database and guesses the idempotency key still lacks the server secret.
    assert idempotency.unseal(sealed, "deploy-2026-12-01", b"\x02" * 32) is None


async def test_records_are_purged_once_past_their_retention(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await create_key(client, tenant.admin_key, name="old", idempotencyKey="first")
    travel(monkeypatch, timedelta(hours=24, minutes=1))

    await create_key(client, tenant.admin_key, name="new", idempotencyKey="second")

    async with runtime.engine.connect() as connection:
        count = await connection.execute(text("SELECT count(*) FROM idempotency_records"))
        assert count.scalar_one() == 1


async def test_the_periodic_purge_removes_expired_records_without_a_new_request(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await create_key(client, tenant.admin_key, name="old", idempotencyKey="first")
    travel(monkeypatch, timedelta(hours=24, minutes=1))
    monkeypatch.setattr(idempotency, "PURGE_EVERY_SECONDS", 0.01)

    purge = asyncio.create_task(idempotency.purge_periodically(runtime.sessionmaker))
    try:
        for _ in range(200):
            async with runtime.engine.connect() as connection:
                count = await connection.execute(text("SELECT count(*) FROM idempotency_records"))
                if count.scalar_one() == 0:
                    break
            await asyncio.sleep(0.01)
    finally:
        purge.cancel()

    async with runtime.engine.connect() as connection:
        count = await connection.execute(text("SELECT count(*) FROM idempotency_records"))
        assert count.scalar_one() == 0


@asynccontextmanager
async def client_with_secrets(
    settings: Settings, secret: str, previous: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of another keyhouse on the same database, its server secret rotated."""
    rotated = settings.model_copy(
        update={
            "secret_key": SecretStr(secret),
            "secret_key_previous": None if previous is None else SecretStr(previous),
        }
    )
    runtime = Runtime.create(rotated)
    app = create_app(runtime=runtime)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://rotated.test"
            ) as client,
        ):
            yield client
    finally:
        await runtime.engine.dispose()


async def test_after_the_server_secret_is_rotated_the_previous_one_still_opens_its_records(
    client: httpx.AsyncClient,
    runtime: Runtime,
    settings: Settings,
    tenant: Tenant,
    mutation: Mutation,
) -> None:
    first = await mutation.send(client, tenant.admin_key)
    assert first["userErrors"] == [], first
    after_first = await snapshot(runtime)
    old = runtime.server_secret.hex()

    async with client_with_secrets(settings, "ab" * 32, previous=old) as rotated:
        retried = await mutation.send(rotated, tenant.admin_key)

    assert retried == first
    # No second key, no second record (the retry itself is counted as a use, as any request).
    now = await snapshot(runtime)
    for table in ("idempotency_records", "audit_events"):
        assert now[table] == after_first[table]
    assert [row[0] for row in now["api_keys"]] == [row[0] for row in after_first["api_keys"]]


async def test_without_the_previous_secret_a_record_it_sealed_answers_no_retry(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings, tenant: Tenant
) -> None:
    created = await create_key(client, tenant.admin_key, name="first", idempotencyKey="req-9")

    async with client_with_secrets(settings, "ab" * 32, previous=None) as rotated:
        again = await mutate(
            rotated,
            CREATE_KEY,
            "createApiKey",
            tenant.admin_key,
            name="second",
            scopes=["read:charge_points"],
            idempotencyKey="req-9",
        )

    # The record is not found (its lookup digest was made with the old secret): a new request.
    assert again["userErrors"] == []
    assert again["apiKey"]["id"] != created["apiKey"]["id"]
