"""Everything a running keyhouse holds: settings, database, cache, limiter, recorder, verifier.

One ``Runtime`` per process (the web app or a CLI command); tests build their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Plane, Settings
from app.keys import idempotency
from app.keys.broadcast import KeyChangeBroadcast
from app.keys.cache import KeyCache
from app.keys.credits import CreditLedger
from app.keys.policy import SUPERSESSION_LEFT
from app.keys.scopes import ScopeCatalogue
from app.keys.supersession import SupersessionWorker
from app.keys.verification import KeyVerifier, TracedKeyVerifier
from app.kit import server_secret
from app.kit.db import SessionMaker, create_engine, create_sessionmaker
from app.kit.ratelimit import RateLimiter
from app.models.audit import OUTBOX_WRITTEN
from app.usage.recorder import UsageRecorder
from app.usage.service import usage_retention
from app.webhooks.notices import notice_expiries_periodically
from app.webhooks.worker import DeliveryWorker

if TYPE_CHECKING:
    from app.kit.tracing import Tracing

logger = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 5.0


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: SessionMaker
    catalogue: ScopeCatalogue
    cache: KeyCache
    broadcast: KeyChangeBroadcast
    limiter: RateLimiter
    recorder: UsageRecorder
    verifier: KeyVerifier
    server_secret: bytes
    ledger: CreditLedger
    webhooks: DeliveryWorker
    supersessions: SupersessionWorker
    # During a rotation of the server secret: idempotency records it sealed still answer.
    previous_server_secret: bytes | None = None
    # With KEYHOUSE_OTEL_ENDPOINT set, in the process that serves (app/main.py).
    tracing: Tracing | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def create(cls, settings: Settings, *, tracing: Tracing | None = None) -> Runtime:
        """Raises MissingServerSecret when the deployment has no server secret and keyhouse
        cannot make one itself (any database but SQLite). With ``tracing``, the database's
        statements and the verifications are spans."""
        secret = server_secret.load(settings)
        engine = create_engine(settings.database_url, sqlite_pool_size=settings.sqlite_pool_size)
        if tracing is not None:
            tracing.database(engine)
        sessionmaker = create_sessionmaker(engine)
        catalogue = ScopeCatalogue(settings.product_scopes)
        cache = KeyCache(
            max_entries=settings.cache_max_entries,
            negative_ttl_seconds=settings.negative_cache_ttl_seconds,
            negative_max_entries=settings.negative_cache_max_entries,
        )
        broadcast = KeyChangeBroadcast(cache, settings.redis_url)
        limiter = RateLimiter(settings.redis_url)
        recorder = UsageRecorder(
            sessionmaker,
            flush_interval_seconds=settings.usage_flush_interval_seconds,
            max_buckets=settings.usage_flush_max_buckets,
            retention=usage_retention(settings),
            max_labels_per_key_hour=settings.usage_max_labels_per_key_hour,
        )
        ledger = CreditLedger(sessionmaker, settings.redis_url)
        # With tracing, each verification is a span; without, the verifier has no trace of it.
        verifier_class = (
            KeyVerifier if tracing is None else partial(TracedKeyVerifier, tracer=tracing.tracer)
        )
        verifier = verifier_class(
            settings=settings,
            sessionmaker=sessionmaker,
            cache=cache,
            broadcast=broadcast,
            limiter=limiter,
            recorder=recorder,
            catalogue=catalogue,
            ledger=ledger,
        )
        webhooks = DeliveryWorker(sessionmaker, settings, secret)
        supersessions = SupersessionWorker(sessionmaker)
        # Every unit of work that commits an outbox event (a supersession with keys left) wakes
        # this instance's worker for it.
        sessionmaker.configure(
            info={OUTBOX_WRITTEN: webhooks.wake, SUPERSESSION_LEFT: supersessions.wake}
        )
        return cls(
            settings,
            engine,
            sessionmaker,
            catalogue,
            cache,
            broadcast,
            limiter,
            recorder,
            verifier,
            secret,
            ledger,
            webhooks,
            supersessions,
            server_secret.load_previous(settings),
            tracing,
        )

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.broadcast.listen(), name="key-change-broadcast"),
            asyncio.create_task(self.broadcast.deliver(), name="key-change-delivery"),
            asyncio.create_task(self.recorder.run(), name="usage-flush"),
            asyncio.create_task(
                self.ledger.run(self.settings.usage_flush_interval_seconds),
                name="credit-write-back",
            ),
            asyncio.create_task(
                idempotency.purge_periodically(self.sessionmaker), name="idempotency-purge"
            ),
        ]
        # Key changes made by the control plane are finished by it: verification does not wait
        # for them (see app/keys/supersession.py).
        if self.settings.plane is not Plane.DATA:
            self._tasks.append(
                asyncio.create_task(self.supersessions.run(), name="supersession-batches")
            )
        # Webhooks and expiry notices are the control plane's work: a data-plane process keeps
        # its latency to itself.
        if self.settings.plane is not Plane.DATA and self.settings.deliver_webhooks:
            self._tasks += [
                asyncio.create_task(self.webhooks.run(), name="webhook-delivery"),
                asyncio.create_task(
                    notice_expiries_periodically(
                        self.sessionmaker, self.settings.expiry_notice_interval_seconds
                    ),
                    name="expiry-notices",
                ),
            ]

    async def stop(self) -> None:
        self.broadcast.stop_listening()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task that swallowed its cancellation must not hang the shutdown.
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_SECONDS)
            for task in stuck:
                logger.warning("background task %s did not stop in time", task.get_name())
        self._tasks = []
        # What was used since the last flush is written before the process goes away.
        with contextlib.suppress(Exception):
            await self.recorder.flush()
        try:
            await self.ledger.write_back()
        except Exception:
            logger.exception("credit balances not written back at shutdown (Redis holds them)")
        await self.ledger.close()
        await self.broadcast.close()
        await self.limiter.close()
        await self.webhooks.close()
        await self.engine.dispose()
        if self.tracing is not None:
            # The last spans (the final flush's statements among them) go before the process.
            await asyncio.to_thread(self.tracing.shutdown)
