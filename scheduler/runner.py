"""Builds the AsyncIOScheduler with our jobs (triggers only; state stays in the database)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scheduler.housekeeping import prune_processed_updates

log = logging.getLogger(__name__)


def build_scheduler(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: Callable[[], datetime],
    processed_update_retention: timedelta,
    timezone: str,
) -> AsyncIOScheduler:
    """A scheduler (not started) with the housekeeping job at 03:00 local time."""
    scheduler = AsyncIOScheduler(timezone=timezone)

    async def prune() -> None:
        removed = await prune_processed_updates(
            sessionmaker, older_than=clock() - processed_update_retention
        )
        log.info("pruned %d processed update ids", removed)

    scheduler.add_job(prune, "cron", hour=3, minute=0, id="prune_processed_updates", coalesce=True)
    return scheduler
