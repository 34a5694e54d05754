"""keyhouse killed (SIGKILL) between the commit of a change and the delivery of its event: the
event arrives after the restart, signed, with the same webhook-id (a receiver deduplicates on
it). A real ``keyhouse serve`` on SQLite and a real receiver."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

import httpx
import pytest

from tests.processes import (
    ROOT,
    environment_without_settings,
    free_port,
    healthy,
    keyhouse_command,
    keyhouse_json,
    started,
    wait_until,
)
from tests.support import gql
from tests.webhooks.receiver import Receiver
from tests.webhooks.support import rows_in

pytestmark = [pytest.mark.slow]

CREATE_KEY = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id } userErrors { code } }
}
"""
CREATE_ENDPOINT = """
mutation Create($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { endpoint { id } signingSecret userErrors { code } }
}
"""


@contextmanager
def serving(env: dict[str, str], port: int, log: Path) -> Iterator[Popen[bytes]]:
    command = [*keyhouse_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with started(command, log, env=env, cwd=ROOT) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url), process, "keyhouse", log)
        yield process


async def test_an_event_in_flight_when_keyhouse_is_killed_arrives_after_the_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    database = tmp_path / "keyhouse.db"
    env = environment_without_settings()
    env.update(
        KEYHOUSE_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        KEYHOUSE_WEBHOOK_ALLOW_HTTP_HOSTS="127.0.0.1",
        # A killed instance's lease runs out quickly here (30 s by default).
        KEYHOUSE_WEBHOOK_LEASE_SECONDS="1",
        KEYHOUSE_WEBHOOK_POLL_INTERVAL_SECONDS="0.1",
    )
    admin = keyhouse_json(env, "init", "--organization", "Acme")["apiKey"]
    port = free_port()
    receiver.hold()

    with serving(env, port, tmp_path / "first.log") as process:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", trust_env=False
        ) as client:
            made = await gql(
                client,
                CREATE_ENDPOINT,
                {"input": {"url": receiver.url, "events": ["key.created"]}},
                key=admin,
            )
            secret = made.data["createWebhookEndpoint"]["signingSecret"]
            created = await gql(
                client, CREATE_KEY, {"input": {"name": "ci", "scopes": ["read:billing"]}}, key=admin
            )
            key_id = created.data["createApiKey"]["apiKey"]["id"]
        # Committed, and on its way: the receiver has it but has not answered.
        await asyncio.wait_for(receiver.arrived.wait(), 10)
        process.send_signal(signal.SIGKILL)
        process.wait(5)

    first = receiver.received[0]
    receiver.arrived.clear()
    receiver.release()
    with serving(env, port, tmp_path / "second.log"):
        await asyncio.wait_for(receiver.arrived.wait(), 15)

    again = receiver.received[-1]
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    event = again.verified_with(secret)
    assert event["type"] == "key.created"
    assert event["data"]["key"]["id"] == key_id
    statuses = await rows_in(
        f"sqlite+aiosqlite:///{database}", "SELECT status FROM webhook_deliveries"
    )
    assert statuses == [("SUCCEEDED",)]
