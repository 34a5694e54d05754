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
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from app.auth.principal import Caller
from app.config import Settings
from app.kit.db import SessionMaker, session_scope
from app.kit.timeutil import utcnow
from app.metrics import WEBHOOK_ATTEMPTS
from app.models.audit import AuditAction, record_event
from app.models.webhooks import WebhookEndpoint
from app.webhooks import repository
from app.webhooks.destinations import (
    RefusedDestination,
    Resolver,
    allowed_http_hosts,
    destination,
    system_resolver,
)
from app.webhooks.signing import signed_headers, unseal

logger = logging.getLogger(__name__)

# Standard Webhooks' advice, and what Stripe does: retries for three days, then give up.
GIVE_UP_AFTER = timedelta(days=3)
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 3600.0
EXCERPT_BYTES = 200
FAN_OUT_BATCH = 500
PURGE_EVERY_SECONDS = 3600.0
# Events are kept a while after they were fanned out (what expiry notices and leak reports
# check they sent once lives in the outbox too: longer than any notice's window).
KEEP_EVENTS = timedelta(days=30)
KEEP_DELIVERIES = timedelta(days=30)
USER_AGENT = "keyhouse-webhooks"


def retry_delay(attempts_made: int, rng: random.Random | None = None) -> timedelta:
    """About a second after the first attempt, doubling, at most an hour apart; jittered by a
    fifth either way so that deliveries that failed together do not retry together."""
    base = min(FIRST_RETRY_SECONDS * 2 ** max(attempts_made - 1, 0), MAX_RETRY_SECONDS)
    jitter = (rng or random).uniform(0.8, 1.2)
    return timedelta(seconds=min(base * jitter, MAX_RETRY_SECONDS))


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None
    excerpt: str | None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


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
        self._server_secret = server_secret
        self._resolver = resolver
        self._clock = clock
        self._allowed: Collection[str] = allowed_http_hosts(settings.webhook_allow_http_hosts)
        self._lease = timedelta(seconds=settings.webhook_lease_seconds)
        self._batch = settings.webhook_max_concurrency
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds),
            follow_redirects=False,  # a redirect is a failed attempt, never followed
            trust_env=False,  # no proxy from the environment between keyhouse and a receiver
            limits=httpx.Limits(max_connections=settings.webhook_max_concurrency),
        )

    async def wake(self) -> None:
        """Look at the outbox now (an event was just committed)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                busy = await self.step()
                if loop.time() - last_purge > PURGE_EVERY_SECONDS:
                    last_purge = loop.time()
                    await self.purge()
            except Exception:
                # The database is away, say: try again at the next interval, never stop.
                logger.exception("webhook delivery step failed; retrying")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), self._settings.webhook_poll_interval_seconds
                    )
                self._wake.clear()

    async def step(self) -> bool:
        """Fan out what is due, attempt what is due; whether there was anything to do."""
        now = self._clock()
        async with session_scope(self._sessionmaker) as session:
            fanned = await repository.fan_out(session, now, limit=FAN_OUT_BATCH)
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
        outcome = await self._send(delivery, endpoint)
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

    async def _send(self, delivery: repository.Claimed, endpoint: WebhookEndpoint) -> Outcome:
        try:
            target = await destination(endpoint.url, self._allowed, self._resolver)
        except RefusedDestination as refusal:
            return Outcome(None, str(refusal)[:EXCERPT_BYTES])
        headers = {
            # Signed at the wall clock's time: the receiver compares it with its own.
            **signed_headers(
                delivery.event_id, delivery.payload, utcnow(), self._secrets(endpoint)
            ),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.host_header,
        }
        request = self._client.build_request(
            "POST",
            target.url,
            content=delivery.payload.encode(),
            headers=headers,
            extensions={"sni_hostname": target.server_name},
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            return Outcome(None, f"{type(error).__name__}: {error}"[:EXCERPT_BYTES])
        try:
            # Only a short excerpt of the answer is read and kept, whatever the receiver sends.
            excerpt = b""
            async for chunk in response.aiter_raw():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        return Outcome(response.status_code, excerpt[:EXCERPT_BYTES].decode("utf-8", "replace"))

    def _secrets(self, endpoint: WebhookEndpoint) -> list[str]:
        current = unseal(self._server_secret, endpoint.id, endpoint.sealed_secret)
        previous = endpoint.previous_sealed_secret
        until = endpoint.previous_secret_until
        if previous is None or until is None or until <= self._clock():
            return [current]
        return [current, unseal(self._server_secret, endpoint.id, previous)]

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
        await self._client.aclose()
