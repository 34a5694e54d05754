"""Key names are read by people in a list: no invisible or control characters, and two names
that read the same are the same name."""

from __future__ import annotations

import httpx
import pytest

from app.runtime import Runtime
from tests.lifecycle_support import CREATE_KEY, create_key, mutate
from tests.support import Tenant, gql, snapshot


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("adm\u200bin", id="zero-width-space"),
        pytest.param("deploy\u202ebot", id="right-to-left-override"),
        pytest.param("line\r\nbreak", id="cr-lf"),
        pytest.param("esc\x1b[31m", id="escape"),
        pytest.param("soft\u00adhyphen", id="soft-hyphen"),
        pytest.param("nul\x00", id="nul"),
    ],
)
async def test_a_name_with_an_invisible_or_control_character_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, name: str
) -> None:
    before = await snapshot(runtime)

    result = await gql(
        client,
        CREATE_KEY,
        {"input": {"name": name, "scopes": ["read:billing"]}},
        key=tenant.admin_key,
    )

    # Characters no value may hold stop the request at the boundary; those only a name may not
    # hold are the mutation's INVALID_INPUT.
    if result.errors:
        assert result.error_codes == ["BAD_USER_INPUT"]
        assert result.data is None
    else:
        (error,) = result.data["createApiKey"]["userErrors"]
        assert (error["code"], error["field"]) == ("INVALID_INPUT", "name")
    assert await snapshot(runtime) == before


async def test_an_invisible_character_in_a_name_is_invalid_input_naming_its_position(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    payload = await mutate(
        client,
        CREATE_KEY,
        "createApiKey",
        tenant.admin_key,
        name="adm\u200bin",
        scopes=["read:billing"],
    )

    (error,) = payload["userErrors"]
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "name")
    assert error["message"] == "Name holds an invisible character at position 3."


@pytest.mark.parametrize(
    "lookalike",
    [
        pytest.param("\uff44\uff45\uff50\uff4c\uff4f\uff59", id="full-width"),
        pytest.param("DEPLOY", id="upper-case"),
        pytest.param("Deploy", id="capitalised"),
        pytest.param("  deploy ", id="padded"),
        pytest.param("deploy", id="same"),
    ],
)
async def test_a_name_that_reads_the_same_as_a_live_keys_is_name_taken(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, lookalike: str
) -> None:
    await create_key(client, tenant.admin_key, name="deploy")
    before = await snapshot(runtime)

    payload = await mutate(
        client,
        CREATE_KEY,
        "createApiKey",
        tenant.admin_key,
        name=lookalike,
        scopes=["read:billing"],
    )

    (error,) = payload["userErrors"]
    assert error["code"] == "NAME_TAKEN"
    assert await snapshot(runtime) == before


async def test_names_that_differ_in_more_than_case_and_width_are_distinct(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_key(client, tenant.admin_key, name="deploy")

    created = await create_key(client, tenant.admin_key, name="deploy-2")

    assert created["userErrors"] == []


async def test_a_name_keeps_the_spelling_it_was_given(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create_key(client, tenant.admin_key, name="Zürich Déploiement")

    assert created["apiKey"]["name"] == "Zürich Déploiement"


async def test_a_name_taken_error_quotes_at_most_a_short_excerpt(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    name = "n" * 128
    await create_key(client, tenant.admin_key, name=name)

    payload = await mutate(
        client,
        CREATE_KEY,
        "createApiKey",
        tenant.admin_key,
        name=name.upper(),
        scopes=["read:billing"],
    )

    (error,) = payload["userErrors"]
    assert error["code"] == "NAME_TAKEN"
    assert "N" * 100 + "…" in error["message"]
    assert "N" * 101 not in error["message"]
