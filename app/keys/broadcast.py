"""Tells every keyhouse instance that a key changed (was revoked), through Redis pub/sub.

The local cache is invalidated directly; other instances hear it on the channel. While the
subscription is not live (no Redis, or Redis down), ``live`` is False and the verifier uses the
short cache TTL instead, so a revocation on another instance is seen within that bound. After a
reconnect the whole cache is dropped: messages sent while we were away are lost.

A change that could not be published is kept and published again, with backoff, until Redis
takes it: an instance that stayed subscribed while this one could not reach Redis would
otherwise serve the revoked key from its cache for the whole long TTL. Messages only drop cache
entries, so sending one late, twice or out of order is harmless.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.keys.cache import KeyCache
from app.kit.db import after_commit

logger = logging.getLogger(__name__)

CHANNEL = "keyhouse:key-changed"
RECONNECT_SECONDS = 1.0
# Retrying an undelivered change: quick at first (a blip), then no faster than this, so that a
# healed Redis hears it within a couple of seconds without being hammered during an outage.
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0
# On close (the CLI exits, the server stops): how long to keep trying what is still undelivered.
CLOSE_DELIVERY_SECONDS = 3.0
_NO_RETRY = Retry(NoBackoff(), 0)


# Announced instead of a key id when too many keys changed at once to name each: every
# instance drops its whole cache.
EVERY_KEY = "*"
# Announced before an organization's id when the organization itself changed (suspended or
# resumed): every instance drops that organization's keys.
ORGANIZATION = "organization:"


def _forget(cache: KeyCache, key_id: str) -> None:
    if key_id == EVERY_KEY:
        cache.clear()
    elif key_id.startswith(ORGANIZATION):
        cache.invalidate_organization(key_id.removeprefix(ORGANIZATION))
    else:
        cache.invalidate_key(key_id)


class KeyChangeBroadcast:
    def __init__(self, cache: KeyCache | None, redis_url: str | None) -> None:
        self._cache = cache
        self._client: redis.Redis | None = None
        self._subscriber: redis.Redis | None = None
        if redis_url:
            # Publishing sits on a request's path: fail fast. The subscriber waits for messages
            # indefinitely, so it has no read timeout; health checks notice a dead connection.
            # Neither retries inside redis-py (by default up to ten times, with backoff): a
            # failed publish is retried by ``deliver`` without holding up the request, and a
            # subscription that redis-py re-established silently would hide the messages lost
            # meanwhile, where ``listen`` drops the cache after every reconnect.
            self._client = redis.Redis.from_url(
                redis_url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=_NO_RETRY
            )
            self._subscriber = redis.Redis.from_url(
                redis_url, socket_connect_timeout=0.5, health_check_interval=2, retry=_NO_RETRY
            )
        self.live = False
        self._stopping = False
        # Key ids whose change is not published yet, oldest first (a dict as an ordered set).
        self._undelivered: dict[str, None] = {}
        self._retry = asyncio.Event()

    @property
    def configured(self) -> bool:
        return self._client is not None

    @property
    def undelivered(self) -> int:
        """Changes waiting to be published again."""
        return len(self._undelivered)

    async def key_changed(self, key_id: str) -> None:
        """Call after the change has committed."""
        if self._cache is not None:
            _forget(self._cache, key_id)
        if self._client is None:
            return
        # While earlier changes wait for Redis, this one waits with them: the request that made
        # it is not held up by another attempt that would time out.
        if not self._undelivered:
            if await self._publish(key_id):
                return
            logger.warning("could not broadcast a key change; retrying until Redis takes it")
        self._undelivered[key_id] = None
        self._retry.set()

    async def deliver(self) -> None:
        """Publish undelivered changes again until each is taken, until cancelled."""
        delay = RETRY_FIRST_SECONDS
        while not self._stopping:
            await self._retry.wait()
            await asyncio.sleep(delay)
            if await self._publish_undelivered():
                self._retry.clear()
                delay = RETRY_FIRST_SECONDS
            else:
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _publish_undelivered(self) -> bool:
        """Publishes what waits, oldest first (also what is added meanwhile); False as soon as
        one cannot be published."""
        while self._undelivered:
            key_id = next(iter(self._undelivered))
            if not await self._publish(key_id):
                return False
            self._undelivered.pop(key_id, None)
        logger.info("key change broadcast: the undelivered changes are published")
        return True

    async def _publish(self, key_id: str) -> bool:
        assert self._client is not None
        try:
            await self._client.publish(CHANNEL, key_id)
        except (RedisError, OSError) as exc:
            logger.debug("key change not published: %s", type(exc).__name__)
            return False
        return True

    async def listen(self) -> None:
        """Subscribe until cancelled, reconnecting when Redis goes away."""
        if self._subscriber is None:
            return
        while not self._stopping:
            try:
                async with self._subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if self._cache is not None:
                        self._cache.clear()
                    if not self.live:
                        logger.info("key change broadcast live")
                    self.live = True
                    # The flag as well as cancellation: redis-py can swallow a cancellation
                    # that arrives during get_message's own timeout, and just return None.
                    while not self._stopping:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None and self._cache is not None:
                            _forget(self._cache, message["data"].decode())
            except (RedisError, OSError) as exc:
                # A read interrupted by stopping is not an outage: no reconnecting.
                if self._stopping:
                    return
                if self.live:
                    logger.warning(
                        "key change broadcast lost (%s); using the short cache TTL",
                        type(exc).__name__,
                    )
                self.live = False
                await asyncio.sleep(RECONNECT_SECONDS)

    def stop_listening(self) -> None:
        """Let :meth:`listen` end instead of reconnecting (call before cancelling it)."""
        self._stopping = True

    async def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._last_delivery()
        for client in (self._client, self._subscriber):
            if client is not None:
                await client.aclose()

    async def _last_delivery(self) -> None:
        """A process about to exit (a CLI revocation, a stopping server) tries a little longer:
        after it, nobody would send what is still undelivered."""
        deadline = asyncio.get_running_loop().time() + CLOSE_DELIVERY_SECONDS
        while self._undelivered and not await self._publish_undelivered():
            if asyncio.get_running_loop().time() >= deadline:
                logger.error(
                    "%d key change(s) were never broadcast; other instances see them when "
                    "their cache entries expire",
                    len(self._undelivered),
                )
                return
            await asyncio.sleep(RETRY_FIRST_SECONDS * 5)


def announce_after_commit(
    session: AsyncSession, broadcast: KeyChangeBroadcast, key_id: str
) -> None:
    """Tell every instance that ``key_id`` changed, once the session's transaction commits:
    only then does a verification that reloads the key see the change."""
    after_commit(session, lambda: broadcast.key_changed(key_id))


def announce_organization_after_commit(
    session: AsyncSession, broadcast: KeyChangeBroadcast, organization_id: str
) -> None:
    """Tell every instance that every key of ``organization_id`` changed (its suspension), once
    the transaction commits: the same channel, delivery and retries as a revocation."""
    after_commit(session, lambda: broadcast.key_changed(ORGANIZATION + organization_id))
