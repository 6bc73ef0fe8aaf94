"""Housekeeping: old inbound update ids are forgotten, recent ones keep deduplicating."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from scheduler.housekeeping import prune_processed_updates
from scheduler.runner import build_scheduler
from storage.models import ProcessedUpdate

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


async def test_prune_removes_only_ids_older_than_the_cutoff(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker() as session, session.begin():
        for update_id, age in (("old-1", 40), ("old-2", 31), ("recent", 29), ("today", 0)):
            session.add(
                ProcessedUpdate(
                    channel=Channel.TELEGRAM,
                    update_id=update_id,
                    processed_at=NOW - timedelta(days=age),
                )
            )
    removed = await prune_processed_updates(sessionmaker, older_than=NOW - timedelta(days=30))
    assert removed == 2
    async with sessionmaker() as session:
        left = (await session.execute(select(ProcessedUpdate.update_id))).scalars().all()
    assert sorted(left) == ["recent", "today"]


async def test_scheduler_registers_the_nightly_prune_without_starting(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    scheduler = build_scheduler(
        sessionmaker=sessionmaker,
        clock=lambda: NOW,
        processed_update_retention=timedelta(days=30),
        timezone="Asia/Jakarta",
    )
    (job,) = scheduler.get_jobs()
    assert job.id == "prune_processed_updates"
    assert str(job.trigger) == "cron[hour='3', minute='0']"
    assert not scheduler.running
