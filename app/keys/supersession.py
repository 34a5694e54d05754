"""Where a supersession left for later is finished: the rest of its keys marked, a batch per
transaction, each key with its audit and webhook events.

Every control-plane instance runs a worker. It wakes when its own instance commits a
supersession with keys left, and otherwise looks every ``POLL_SECONDS`` for one another instance
left (or one whose instance stopped). Nothing rests on the batches' speed: from the commit of
the creation, verification treats every key a pending supersession covers as already marked
(app/keys/verification.py), and a dashboard sees each key's new status once its batch commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import exists
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.keys import policy
from app.kit.db import SessionMaker, is_outage, session_scope
from app.models.keys import KeySupersession

logger = logging.getLogger(__name__)

POLL_SECONDS = 30.0


async def _next(session: AsyncSession) -> KeySupersession | None:
    """The oldest pending supersession of an organization whose earlier ones are finished, that
    no other instance is marking (locked until this transaction ends; SQLite writes one
    transaction at a time anyway). An organization's supersessions run in the order they were
    made: a later one must not take the keys an earlier one covers."""
    earlier = aliased(KeySupersession)
    statement = (
        select(KeySupersession)
        .where(
            ~exists().where(
                col(earlier.organization_id) == col(KeySupersession.organization_id),
                col(earlier.replaced_before) < col(KeySupersession.replaced_before),
            )
        )
        .order_by(col(KeySupersession.replaced_before))
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (await session.exec(statement)).first()


async def mark_next_batch(sessionmaker: SessionMaker, *, limit: int | None = None) -> bool:
    """Mark one batch of a pending supersession in a transaction of its own, and forget the
    supersession once it has no keys left; False when none was pending."""
    async with session_scope(sessionmaker) as session:
        supersession = await _next(session)
        if supersession is None:
            return False
        _, remaining = await policy.mark_batch(
            session, supersession, limit=limit or policy.SUPERSEDED_PER_BATCH
        )
        if remaining:
            session.add(supersession)
        else:
            await session.delete(supersession)
    return True


async def finish_supersessions(sessionmaker: SessionMaker, *, limit: int | None = None) -> int:
    """Mark batches until no supersession is pending; how many batches."""
    batches = 0
    while await mark_next_batch(sessionmaker, limit=limit):
        batches += 1
    return batches


class SupersessionWorker:
    def __init__(self, sessionmaker: SessionMaker) -> None:
        self._sessionmaker = sessionmaker
        self._wake = asyncio.Event()

    async def wake(self) -> None:
        """Look now (a supersession with keys left was just committed)."""
        self._wake.set()

    async def run(self) -> None:
        """Finish pending supersessions until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                batches = await finish_supersessions(self._sessionmaker)
                if batches:
                    logger.info("supersessions: %d batches of keys marked", batches)
            except Exception as error:
                # Nothing is lost: the supersession keeps its progress for the next look.
                if is_outage(error):
                    logger.warning("supersessions wait: the database did not answer")
                else:
                    logger.exception("marking superseded keys failed; retrying")
