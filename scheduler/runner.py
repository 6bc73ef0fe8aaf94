"""Builds the AsyncIOScheduler with our jobs (triggers only; state stays in the database)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, time, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scheduler.digest import DigestPlanner
from scheduler.dispatcher import Dispatcher
from scheduler.housekeeping import (
    apply_retention,
    prune_processed_updates,
    vacuum_personal_tables,
)
from scheduler.reminders import ReminderPlanner

log = logging.getLogger(__name__)


def build_scheduler(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: Callable[[], datetime],
    processed_update_retention: timedelta,
    timezone: str,
    retention: timedelta = timedelta(days=90),
    dispatcher: Dispatcher | None = None,
    digest: DigestPlanner | None = None,
    digest_time: time = time(8, 0),
    reminders: ReminderPlanner | None = None,
    reminder_time: time = time(6, 0),
) -> AsyncIOScheduler:
    """A scheduler (not started) with the housekeeping job at 03:00 local time.

    Housekeeping (`housekeeping_run`): processed update ids and handled
    journal rows older than `processed_update_retention` (or `retention`, if
    shorter) are forgotten, sent and failed notices and parked updates older
    than `retention` are deleted, and on PostgreSQL the tables holding
    personal data are vacuumed.

    With `dispatcher`, its `tick` runs every `dispatcher.tick_interval_s`
    seconds: one instance at a time, missed runs coalesced into one, so a
    tick that outlasts the interval (a full batch at the rate) is never
    stacked. Before shutting the scheduler down, `await dispatcher.stop()`
    lets a running tick record or hand back its rows.

    With `digest`, the PIC digest is planned at `digest_time` local time on
    Monday to Friday (the planner skips holidays itself). A process that was
    down at that time plans it when it comes back the same morning (grace of
    three hours); the dedupe key keeps it to one per PIC per day whichever
    process or run plans it.

    With `reminders`, dues reminders, escalations and lapses are planned every
    day at `reminder_time` local time (their rows wait for the morning and for
    quiet hours in the outbox); a run missed while the process was down is
    made up within twelve hours, and re-runs add nothing (dedupe keys).
    """
    scheduler = AsyncIOScheduler(timezone=timezone)

    async def housekeeping() -> None:
        await housekeeping_run(
            sessionmaker,
            now=clock(),
            processed_update_retention=processed_update_retention,
            retention=retention,
        )

    scheduler.add_job(housekeeping, "cron", hour=3, minute=0, id="housekeeping", coalesce=True)
    if dispatcher is not None:
        scheduler.add_job(
            dispatcher.tick,
            "interval",
            seconds=dispatcher.tick_interval_s,
            id="outbox_dispatcher",
            max_instances=1,
            coalesce=True,
            # A late tick is still worth running: it only sends what is due.
            misfire_grace_time=None,
        )
    if digest is not None:
        scheduler.add_job(
            digest.plan,
            "cron",
            day_of_week="mon-fri",
            hour=digest_time.hour,
            minute=digest_time.minute,
            id="pic_digest",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3 * 3600,
        )
    if reminders is not None:
        scheduler.add_job(
            reminders.plan,
            "cron",
            hour=reminder_time.hour,
            minute=reminder_time.minute,
            id="dues_reminders",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=12 * 3600,
        )
    return scheduler


async def housekeeping_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    processed_update_retention: timedelta,
    retention: timedelta,
) -> None:
    """One nightly housekeeping: prune dedupe ids, apply retention, vacuum (PostgreSQL)."""
    removed = await prune_processed_updates(
        sessionmaker, older_than=now - min(processed_update_retention, retention)
    )
    deleted = await apply_retention(sessionmaker, older_than=now - retention)
    log.info(
        "housekeeping: %d processed update ids, %d notices, %d parked updates, %d stale "
        "replies, %d closed questions deleted",
        removed,
        deleted.notices,
        deleted.parked_updates,
        deleted.replies,
        deleted.questions,
    )
    database = sessionmaker.kw.get("bind")
    if isinstance(database, AsyncEngine):
        vacuumed = await vacuum_personal_tables(database)
        if vacuumed:
            log.info("housekeeping: vacuumed %d tables", len(vacuumed))
