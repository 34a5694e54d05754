"""The delivery worker: takes committed events from the outbox to every subscribed endpoint,
signed, at least once, in order per key, retrying with backoff for up to three days.

Every instance runs one. It wakes when its own instance commits an event, and otherwise looks
every ``webhook_poll_interval_seconds`` for what other instances committed. Nothing is kept
only in memory: an instance killed at any moment loses nothing (the outbox row or the leased
delivery is still there for the next instance, or for itself after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta

from app.auth.principal import Caller
from app.config import Settings
from app.kit.db import SessionMaker, is_outage, session_scope
from app.kit.timeutil import utcnow
from app.metrics import WEBHOOK_ATTEMPTS
from app.models.audit import AuditAction, record_event
from app.models.webhooks import WebhookEndpoint
from app.webhooks import repository
from app.webhooks.destinations import Resolver, allowed_http_hosts, system_resolver
from app.webhooks.sending import Sender

logger = logging.getLogger(__name__)

# Standard Webhooks' advice, and what Stripe does: retries for three days, then give up.
GIVE_UP_AFTER = timedelta(days=3)
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 3600.0
FAN_OUT_BATCH = 500
PURGE_EVERY_SECONDS = 3600.0
# Events are kept a while after they were fanned out (what expiry notices and leak reports
# check they sent once lives in the outbox too: longer than any notice's window).
KEEP_EVENTS = timedelta(days=30)
KEEP_DELIVERIES = timedelta(days=30)
# Delivery loops per instance, sharing webhook_max_concurrency between them. One on SQLite: it
# writes one transaction at a time, and its small pool also serves the requests.
LANES = 4


def retry_delay(attempts_made: int, rng: random.Random | None = None) -> timedelta:
    """About a second after the first attempt, doubling, at most an hour apart; jittered by a
    fifth either way so that deliveries that failed together do not retry together."""
    base = min(FIRST_RETRY_SECONDS * 2 ** max(attempts_made - 1, 0), MAX_RETRY_SECONDS)
    jitter = (rng or random).uniform(0.8, 1.2)
    return timedelta(seconds=min(base * jitter, MAX_RETRY_SECONDS))


class DeliveryWorker:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        settings: Settings,
        server_secret: bytes,
        *,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._clock = clock
        self._lease = timedelta(seconds=settings.webhook_lease_seconds)
        self._lanes = 1 if settings.is_sqlite else LANES
        self._batch = max(1, settings.webhook_max_concurrency // self._lanes)
        self._wake = asyncio.Event()
        # Whether the outbox may hold events to fan out: an event was committed here, or the
        # last fan-out took a full batch. Otherwise the lanes look once per poll interval.
        self._fan_out_wanted = True
        self._last_fan_out = float("-inf")
        self._sender = Sender(
            server_secret,
            allowed_http_hosts(settings.webhook_allow_http_hosts),
            resolver,
            timeout_seconds=settings.webhook_timeout_seconds,
            max_connections=settings.webhook_max_concurrency,
            clock=clock,
        )

    async def wake(self) -> None:
        """Look at the outbox now (an event was just committed)."""
        self._fan_out_wanted = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled, in a few loops: each waits for its own batch's slowest
        receiver (up to the timeout), so a slow endpoint holds up a lane, not every delivery."""
        await asyncio.gather(*(self._lane(purges=lane == 0) for lane in range(self._lanes)))

    async def _lane(self, *, purges: bool) -> None:
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                busy = await self.step(fan_out=self._fan_out_due(loop.time()))
                if purges and loop.time() - last_purge > PURGE_EVERY_SECONDS:
                    last_purge = loop.time()
                    await self.purge()
            except Exception as error:
                # Try again at the next interval, never stop: nothing is lost meanwhile.
                if is_outage(error):
                    logger.warning("webhook delivery waits: the database did not answer")
                else:
                    logger.exception("webhook delivery step failed; retrying")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), self._settings.webhook_poll_interval_seconds
                    )
                self._wake.clear()

    def _fan_out_due(self, loop_time: float) -> bool:
        """While a backlog is delivered, the outbox is read when it may hold something, not at
        every batch (three round trips saved per batch)."""
        interval = self._settings.webhook_poll_interval_seconds
        if not self._fan_out_wanted and loop_time - self._last_fan_out < interval:
            return False
        self._fan_out_wanted = False  # before the fan-out: a wake meanwhile is kept
        self._last_fan_out = loop_time
        return True

    async def step(self, *, fan_out: bool = True) -> bool:
        """Fan out what is due (unless told not to), attempt what is due; whether there was
        anything to do."""
        now = self._clock()
        fanned = 0
        if fan_out:
            async with session_scope(self._sessionmaker) as session:
                fanned = await repository.fan_out(session, now, limit=FAN_OUT_BATCH)
            if fanned == FAN_OUT_BATCH:
                self._fan_out_wanted = True  # more may be waiting
        async with session_scope(self._sessionmaker) as session:
            claimed = await repository.claim(session, now, lease=self._lease, limit=self._batch)
            endpoints = await repository.endpoints_by_id(
                session, sorted({delivery.endpoint_id for delivery in claimed})
            )
        if claimed:
            attempts = await asyncio.gather(
                *(self._attempt(delivery, endpoints[delivery.endpoint_id]) for delivery in claimed)
            )
            await self._record(attempts, claimed)
        return bool(fanned or claimed)

    async def _attempt(
        self, delivery: repository.Claimed, endpoint: WebhookEndpoint
    ) -> repository.Attempt:
        started = self._clock()
        outcome = await self._sender.send(delivery.event_id, delivery.payload, endpoint)
        WEBHOOK_ATTEMPTS.labels("succeeded" if outcome.succeeded else "failed").inc()
        next_attempt = None
        if not outcome.succeeded:
            retry_at = started + retry_delay(delivery.attempts + 1)
            if retry_at - delivery.created_at <= GIVE_UP_AFTER:
                next_attempt = retry_at
        return repository.Attempt(
            delivery_id=delivery.id,
            at=started,
            response_status=outcome.status,
            excerpt=outcome.excerpt,
            succeeded=outcome.succeeded,
            next_attempt_at=next_attempt,
        )

    async def _record(
        self, attempts: list[repository.Attempt], claimed: list[repository.Claimed]
    ) -> None:
        by_id = {delivery.id: delivery for delivery in claimed}
        async with session_scope(self._sessionmaker) as session:
            await repository.record_attempts(session, attempts)
            for attempt in attempts:
                if attempt.succeeded or attempt.next_attempt_at is not None:
                    continue
                delivery = by_id[attempt.delivery_id]
                # Three days of failures: the endpoint is disabled until its owner enables it.
                if await repository.disable_endpoint(session, delivery.endpoint_id, attempt.at):
                    logger.warning(
                        "webhook endpoint %s disabled: deliveries failed for %s",
                        delivery.endpoint_id,
                        GIVE_UP_AFTER,
                    )
                    record_event(
                        session,
                        Caller(delivery.organization_id, frozenset()),
                        AuditAction.WEBHOOK_ENDPOINT_DISABLED,
                        details={
                            "endpointId": delivery.endpoint_id,
                            "reason": "deliveries failed for 3 days",
                            "lastDeliveryId": delivery.id,
                        },
                    )

    async def purge(self) -> None:
        now = self._clock()
        async with session_scope(self._sessionmaker) as session:
            await repository.purge(
                session, events_before=now - KEEP_EVENTS, deliveries_before=now - KEEP_DELIVERIES
            )

    async def close(self) -> None:
        await self._sender.close()
