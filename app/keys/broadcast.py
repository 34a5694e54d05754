"""Tells every keyhouse instance that a key changed (was revoked), through Redis pub/sub.

The local cache is invalidated directly; other instances hear it on the channel. While the
subscription is not live (no Redis, or Redis down), ``live`` is False and the verifier uses the
short cache TTL instead, so a revocation on another instance is seen within that bound. After a
reconnect the whole cache is dropped: messages sent while we were away are lost.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as redis
from redis.exceptions import RedisError

from app.keys.cache import KeyCache

logger = logging.getLogger(__name__)

CHANNEL = "keyhouse:key-changed"
RECONNECT_SECONDS = 1.0


class KeyChangeBroadcast:
    def __init__(self, cache: KeyCache | None, redis_url: str | None) -> None:
        self._cache = cache
        self._client: redis.Redis | None = None
        self._subscriber: redis.Redis | None = None
        if redis_url:
            # Publishing sits on a request's path: fail fast. The subscriber waits for messages
            # indefinitely, so it has no read timeout; health checks notice a dead connection.
            self._client = redis.Redis.from_url(
                redis_url, socket_connect_timeout=0.5, socket_timeout=0.5
            )
            self._subscriber = redis.Redis.from_url(
                redis_url, socket_connect_timeout=0.5, health_check_interval=2
            )
        self.live = False
        self._stopping = False

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def key_changed(self, key_id: str) -> None:
        """Call after the change has committed."""
        if self._cache is not None:
            self._cache.invalidate_key(key_id)
        if self._client is None:
            return
        try:
            await self._client.publish(CHANNEL, key_id)
        except (RedisError, OSError) as exc:
            # Other instances fall back to the short TTL while Redis is unreachable.
            logger.warning("could not broadcast key change: %s", type(exc).__name__)

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
                            self._cache.invalidate_key(message["data"].decode())
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
        for client in (self._client, self._subscriber):
            if client is not None:
                await client.aclose()
