from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.config import Settings
from tests.webhooks.receiver import Receiver


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Plain http to the test's own receiver on loopback, and no other address.
    return Settings(
        database_url=database_url,
        usage_flush_interval_seconds=3600,
        webhook_allow_http_hosts="127.0.0.1",
        webhook_timeout_seconds=2,
        deliver_webhooks=False,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    yield receiver
    receiver.release()
    await receiver.stop()
