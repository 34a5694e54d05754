from __future__ import annotations

import httpx

from tests.support import Tenant, gql


async def test_admin_key_lists_its_own_key(client: httpx.AsyncClient, tenant: Tenant) -> None:
    result = await gql(client, "{ apiKeys { totalCount nodes { id name } } }", key=tenant.admin_key)
    assert result.response.status_code == 200, result.body
    assert result.data == {
        "apiKeys": {"totalCount": 1, "nodes": [{"id": tenant.admin_key_id, "name": "admin"}]}
    }
