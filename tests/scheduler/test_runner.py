"""Stopping the scheduler: a job running at exit finishes, and nothing logs an error."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain.tariff import DEFAULT_TARIFF
from domain.workdays import WorkCalendar
from handlers.i18n import Catalogs
from scheduler.dispatcher import Dispatcher
from scheduler.reminders import PlanResult, ReminderPlanner
from scheduler.runner import build_scheduler, stop_scheduler
from tests.fakes.clock import FrozenClock

#: Monday 23 November 2026, 09:00 in Jakarta: past the reminders' 06:00.
MONDAY_0900 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


class SlowPlanner(ReminderPlanner):
    """A reminder run that is still in its transaction when the bot is told to stop."""

    def __init__(self, database: AsyncEngine, clock: FrozenClock) -> None:
        super().__init__(
            database,
            Catalogs(),
            clock,
            timezone=ZoneInfo("Asia/Jakarta"),
            calendar=WorkCalendar(()),
            tariff=DEFAULT_TARIFF,
        )
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False

    async def plan(self, **hooks: Any) -> PlanResult:
        self.started.set()
        await self.release.wait()
        result = await super().plan(**hooks)
        self.finished = True
        return result


async def test_stopping_lets_a_running_planner_finish_and_logs_no_error(
    sessionmaker: async_sessionmaker[AsyncSession],
    db_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FrozenClock(MONDAY_0900)
    planner = SlowPlanner(db_engine, clock)
    scheduler = build_scheduler(
        sessionmaker=sessionmaker,
        clock=clock,
        processed_update_retention=timedelta(days=30),
        timezone="Asia/Jakarta",
        reminders=planner,
        reminder_time=time(6, 0),
    )
    caplog.set_level(logging.WARNING)
    scheduler.start()  # the start's catch-up runs the day's reminders
    await asyncio.wait_for(planner.started.wait(), timeout=30)
    stopping = asyncio.create_task(stop_scheduler(scheduler))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # it waits for the planner's run
    planner.release.set()
    await asyncio.wait_for(stopping, timeout=30)
    assert planner.finished
    assert not scheduler.running
    assert [
        record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR
    ] == []


async def test_a_scheduler_that_never_started_is_left_alone(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    scheduler = build_scheduler(
        sessionmaker=sessionmaker,
        clock=FrozenClock(MONDAY_0900),
        processed_update_retention=timedelta(days=30),
        timezone="Asia/Jakarta",
    )
    await stop_scheduler(scheduler)
    assert not scheduler.running


class SlowTicks:
    """A dispatcher whose ticks outlast its interval (a full batch at the rate)."""

    tick_interval_s = 0.05

    def __init__(self) -> None:
        self.ticks = 0

    async def tick(self) -> int:
        self.ticks += 1
        await asyncio.sleep(0.3)
        return 0

    async def stop(self) -> None:
        return None


class OtherTicks(SlowTicks):
    """Another job as slow: its skips are still warned about."""


async def test_skipped_dispatcher_ticks_are_not_warned_about_and_other_skips_are(
    sessionmaker: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    """Under load a province's log held a skip warning every half second per process."""
    dispatcher = SlowTicks()
    scheduler = build_scheduler(
        sessionmaker=sessionmaker,
        clock=FrozenClock(MONDAY_0900),
        processed_update_retention=timedelta(days=30),
        timezone="Asia/Jakarta",
        dispatcher=cast(Dispatcher, dispatcher),
    )
    other = OtherTicks()
    scheduler.add_job(other.tick, "interval", seconds=0.05, id="other", max_instances=1)
    caplog.set_level(logging.WARNING, logger="apscheduler")
    scheduler.start()
    try:
        await asyncio.sleep(0.7)
    finally:
        await stop_scheduler(scheduler)

    skips = [
        record.getMessage()
        for record in caplog.records
        if "maximum number of running instances" in record.getMessage()
    ]
    assert dispatcher.ticks >= 2 and other.ticks >= 2
    assert skips and all('"OtherTicks.tick' in message for message in skips)
