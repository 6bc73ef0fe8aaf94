"""The day's planning when the bot starts late, and `sertakan plan run` for the operator.

An OPD with an active worker (the card came on 21 November) whose first dues
are due on Tuesday 15 December 2026: on Thursday 10 December the 5-day
reminder is due, and the PIC's digest has news (the card).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Runtime, build_background
from scheduler.runner import stop_scheduler
from storage.models import Outbox
from tests.fakes.admin import Admin
from tests.fakes.chat import TEST_KEY, WORKER_NIK
from tests.fakes.clock import FrozenClock
from tests.fakes.runtime import open_runtime
from tests.fakes.workbench import PIC_ID, Office, activate, build_office

#: Thursday 10 December 2026 in Jakarta (UTC+7).
THURSDAY_0500 = datetime(2026, 12, 9, 22, 0, tzinfo=UTC)
THURSDAY_0700 = datetime(2026, 12, 10, 0, 0, tzinfo=UTC)
THURSDAY_0900 = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)
SATURDAY_0900 = datetime(2026, 12, 12, 2, 0, tzinfo=UTC)


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    return office


@pytest.fixture
async def runtime(tmp_path: Path, database_url: str, office: Office) -> AsyncIterator[Runtime]:
    """The bot's runtime on the office's database; its clock is the test's to set."""
    key = base64.urlsafe_b64encode(TEST_KEY).decode()
    async with open_runtime(
        tmp_path, database_url, clock=FrozenClock(THURSDAY_0900), nik_key=key
    ) as runtime:
        yield runtime


def set_clock(runtime: Runtime, now: datetime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FrozenClock)
    clock.now = now


async def start_and_stop(runtime: Runtime) -> None:
    """`sertakan run` starting its background (no channel to send on) and stopping once the
    start's own jobs ran."""
    scheduler, dispatcher = build_background(runtime, {})
    finished = asyncio.Event()

    def on_job(event: JobExecutionEvent) -> None:
        if event.job_id == "planning":
            finished.set()

    scheduler.add_listener(on_job, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    try:
        await asyncio.wait_for(finished.wait(), timeout=30)
    finally:
        await dispatcher.stop()
        await stop_scheduler(scheduler)


def planned(rows: list[Outbox]) -> list[tuple[str, str]]:
    """The planners' notices (kind, recipient): the enrollment's own ones left out."""
    return [
        (row.kind, row.recipient) for row in rows if row.kind.startswith(("reminder.", "digest"))
    ]


async def test_a_bot_started_after_the_planning_times_plans_the_day_once(
    office: Office, runtime: Runtime
) -> None:
    await start_and_stop(runtime)
    rows = await office.outbox()
    assert planned(rows) == [("reminder.before5", "1001"), ("digest", PIC_ID)]
    reminder = next(row for row in rows if row.kind == "reminder.before5")
    assert "Siti Aminah" in reminder.body and "15 Desember 2026" in reminder.body
    # Restarted the same day (a deployment): nothing is planned twice.
    await start_and_stop(runtime)
    assert planned(await office.outbox()) == planned(rows)


async def test_a_bot_started_before_the_planning_times_leaves_them_to_the_day(
    office: Office, runtime: Runtime
) -> None:
    set_clock(runtime, THURSDAY_0500)
    await start_and_stop(runtime)
    assert planned(await office.outbox()) == []
    # Started at 07:00: past the reminders' 06:00, before the digest's 08:00.
    set_clock(runtime, THURSDAY_0700)
    await start_and_stop(runtime)
    assert planned(await office.outbox()) == [("reminder.before5", "1001")]


async def test_plan_run_plans_reminders_and_digests_now_and_once(
    office: Office, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = Admin(runtime, capsys)
    assert await admin.run("plan", "run") == 0
    assert "reminders for 2026-12-10: 1 new notices (5 days before 1," in admin.out
    assert "digests: 1 new" in admin.out
    assert planned(await office.outbox()) == [("reminder.before5", "1001"), ("digest", PIC_ID)]
    assert await admin.run("plan", "run") == 0
    assert "reminders for 2026-12-10: 0 new notices" in admin.out
    assert "digests: 0 new" in admin.out
    assert len(planned(await office.outbox())) == 2


async def test_plan_run_says_why_no_digest_is_planned(
    office: Office, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = Admin(runtime, capsys)
    set_clock(runtime, THURSDAY_0700)
    assert await admin.run("plan", "run") == 0
    assert "digests: none before 08:00 (PROGRAM_DIGEST_TIME)" in admin.out
    set_clock(runtime, SATURDAY_0900)
    assert await admin.run("plan", "run") == 0
    assert "digests: none, 2026-12-12 is not a working day" in admin.out
    assert [kind for kind, _ in planned(await office.outbox())] == ["reminder.before5"]
