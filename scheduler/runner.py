"""Builds the AsyncIOScheduler with our jobs (triggers only; state stays in the database)."""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scheduler.digest import DigestPlanner
from scheduler.dispatcher import Dispatcher
from scheduler.housekeeping import (
    apply_retention,
    prune_processed_updates,
    vacuum_personal_tables,
)
from scheduler.planning import Planning
from scheduler.reminders import ReminderPlanner

log = logging.getLogger(__name__)

#: The job runs in progress per scheduler built here (for `stop_scheduler`). APScheduler
#: keeps its own in private attributes, and its AsyncIOExecutor cancels them at shutdown
#: whatever `wait` says, which logs "Error running job ... CancelledError".
_in_flight: weakref.WeakKeyDictionary[AsyncIOScheduler, set[asyncio.Task[object]]] = (
    weakref.WeakKeyDictionary()
)

#: Jobs whose run may outlast their interval by design (a dispatcher tick sending a full
#: batch, a planning run of a province): the runs in between are skipped, as configured
#: (`max_instances=1`), and APScheduler's warning about each skip is left out of the log.
_SKIPPING_BY_DESIGN = frozenset({"outbox_dispatcher", "planning"})


class _ExpectedSkips(logging.Filter):
    """Drops APScheduler's "skipped: maximum number of running instances reached" for
    `_SKIPPING_BY_DESIGN`: under load a province's log got one every half second per
    process (the province proof's tail was nothing else), burying the warnings that
    mean something. Other jobs' skips, and everything else, still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances" not in str(record.msg):
            return True
        job = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return getattr(job, "id", None) not in _SKIPPING_BY_DESIGN


_EXPECTED_SKIPS: Final = _ExpectedSkips()

#: How long `stop_scheduler` waits for running jobs by default (a reminder run over
#: 144,000 sponsorships takes about 3 s; systemd's stop timeout is 90 s).
STOP_GRACE_S = 30.0


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
    planning: Planning | None = None,
    planning_tick_s: float = 60.0,
) -> AsyncIOScheduler:
    """A scheduler (not started) with the housekeeping job at 03:00 local time.

    With `planning` (what `sertakan run` uses), one job `planning` replaces the
    housekeeping, digest, reminder and catch-up jobs below: `Planning.tick` at
    start and every `planning_tick_s` seconds runs each of its jobs that is due
    and not done today, once across processes (leases), and takes over a run
    whose process died.

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
    Monday to Friday (the planner skips holidays itself); the dedupe key keeps
    it to one per PIC per day whichever process or run plans it.

    With `reminders`, dues reminders, escalations and lapses are planned every
    day at `reminder_time` local time (their rows wait for the morning and for
    quiet hours in the outbox); re-runs add nothing (dedupe keys).

    A process started after those times (a restart, a deployment, an outage)
    plans the day's missed runs at once (`catch_up`, the job `catch_up`):
    APScheduler's own misfire grace only covers a run that was due while the
    scheduler was running (its jobs live in memory), not one due before it
    started.
    """
    scheduler = AsyncIOScheduler(timezone=timezone)
    # APScheduler's default logger; `addFilter` adds one filter object once, however often.
    logging.getLogger("apscheduler.scheduler").addFilter(_EXPECTED_SKIPS)
    running: set[asyncio.Task[object]] = set()
    _in_flight[scheduler] = running

    def tracked(job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        """`job`, its runs known to `stop_scheduler` while they last."""

        @functools.wraps(job)
        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None  # APScheduler runs coroutine jobs as tasks
            running.add(task)
            try:
                await job()
            finally:
                running.discard(task)

        return run

    async def housekeeping() -> None:
        await housekeeping_run(
            sessionmaker,
            now=clock(),
            processed_update_retention=processed_update_retention,
            retention=retention,
        )

    if planning is not None:
        scheduler.add_job(
            tracked(planning.tick),
            "interval",
            seconds=planning_tick_s,
            id="planning",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            # At once when the scheduler starts (a late start plans the day's missed runs).
            next_run_time=datetime.now(ZoneInfo(timezone)),
        )
    else:
        scheduler.add_job(
            tracked(housekeeping), "cron", hour=3, minute=0, id="housekeeping", coalesce=True
        )
    if dispatcher is not None:
        scheduler.add_job(
            tracked(dispatcher.tick),
            "interval",
            seconds=dispatcher.tick_interval_s,
            id="outbox_dispatcher",
            max_instances=1,
            coalesce=True,
            # A late tick is still worth running: it only sends what is due.
            misfire_grace_time=None,
        )
    if digest is not None and planning is None:
        scheduler.add_job(
            tracked(digest.plan),
            "cron",
            day_of_week="mon-fri",
            hour=digest_time.hour,
            minute=digest_time.minute,
            id="pic_digest",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3 * 3600,
        )
    if reminders is not None and planning is None:
        scheduler.add_job(
            tracked(reminders.plan),
            "cron",
            hour=reminder_time.hour,
            minute=reminder_time.minute,
            id="dues_reminders",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=12 * 3600,
        )
    if (digest is not None or reminders is not None) and planning is None:

        async def missed() -> None:
            await catch_up(
                clock=clock,
                timezone=ZoneInfo(timezone),
                reminders=reminders,
                reminder_time=reminder_time,
                digest=digest,
            )

        # A date trigger without a date: once, as soon as the scheduler starts; never
        # dropped as late (the start itself may take a while on a busy database).
        scheduler.add_job(tracked(missed), "date", id="catch_up", misfire_grace_time=None)
    return scheduler


async def stop_scheduler(scheduler: AsyncIOScheduler, *, grace_s: float = STOP_GRACE_S) -> None:
    """Shut `scheduler` (built by `build_scheduler`) down once the jobs it runs have ended.

    No job starts after this is called; jobs already running (a dispatcher
    tick, a planner's transaction) finish, for up to `grace_s` seconds, and
    only one still running after that is cancelled (a warning; its
    transaction rolls back, and the next start plans it again). Call
    `Dispatcher.stop()` first so a tick ends after the sends in flight.
    A scheduler that is not running is left alone.
    """
    if not scheduler.running:
        return
    scheduler.pause()
    # A job submitted just before the pause is a task that has not started yet: let it
    # start (and register) before looking, rather than have shutdown cancel it unseen.
    await asyncio.sleep(0)
    running = set(_in_flight.get(scheduler, ()))
    if running:
        _, late = await asyncio.wait(running, timeout=grace_s)
        if late:
            # APScheduler's shutdown cancels them (and logs each as an error).
            log.warning("%d scheduled jobs still ran after %.0f s: cancelled", len(late), grace_s)
    scheduler.shutdown(wait=False)


async def catch_up(
    *,
    clock: Callable[[], datetime],
    timezone: ZoneInfo,
    reminders: ReminderPlanner | None,
    reminder_time: time,
    digest: DigestPlanner | None,
) -> None:
    """Plan what today's scheduled runs would have planned by now (run once at start).

    Reminders when the local time is past `reminder_time`; the digest when
    today is a working day past its time (the planner checks both itself).
    Before those times nothing is planned here: the day's cron run will. Both
    planners skip what their dedupe keys show is planned already, so a second
    start, or a process beside this one, plans nothing twice.
    """
    local = clock().astimezone(timezone)
    if reminders is not None and local.time() >= reminder_time:
        await reminders.plan()
    if digest is not None:
        await digest.plan()


async def housekeeping_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    processed_update_retention: timedelta,
    retention: timedelta,
) -> int:
    """One nightly housekeeping: prune dedupe ids, apply retention, vacuum (PostgreSQL).

    Returns the rows deleted (for the run's record)."""
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
    return removed + deleted.notices + deleted.parked_updates + deleted.replies + deleted.questions
