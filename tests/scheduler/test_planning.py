"""One planner across processes (leases), the reminder planner in pages, off the event loop.

The province is the reminder bench's (`bench.bench_reminders.seed`), small: every
kind of reminder, payroll lines, lapses, on Wednesday 11 November 2026 09:00 WIB.
Two `Planning` objects on two engines stand for two processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from bench.bench_reminders import reset, seed, seed_sqlite_file, sqlite_copy
from bench.province import NOW, dues_payments
from domain.tariff import DEFAULT_TARIFF
from domain.workdays import WorkCalendar
from handlers.i18n import Catalogs
from scheduler.planning import JOB_REMINDERS, OffLoop, Planning
from scheduler.reminders import PlanResult, ReminderPlanner
from storage import planner_runs
from storage.db import create_engine, is_sqlite
from storage.dues_queries import DUES_BEARING
from storage.models import Outbox, Payment, PlannerRun, Sponsorship
from tests.fakes.chat import Chat, build_engine
from tests.fakes.clock import FrozenClock

JAKARTA = ZoneInfo("Asia/Jakarta")
SPONSORSHIPS = 240
LEASE_S = 120.0


def planner(database: AsyncEngine, clock: FrozenClock, chunk_size: int | None) -> ReminderPlanner:
    return ReminderPlanner(
        database,
        Catalogs(),
        clock,
        timezone=JAKARTA,
        calendar=WorkCalendar([]),
        tariff=DEFAULT_TARIFF,
        chunk_size=chunk_size,
    )


def planning(
    database: AsyncEngine,
    clock: FrozenClock,
    owner: str,
    *,
    chunk_size: int | None = 7,
    off_loop: OffLoop | None = None,
    reminders: ReminderPlanner | None = None,
) -> Planning:
    return Planning(
        database,
        clock,
        timezone=JAKARTA,
        calendar=WorkCalendar([]),
        owner=owner,
        lease_s=LEASE_S,
        reminders=reminders or planner(database, clock, chunk_size),
        off_loop=off_loop,
    )


async def outbox_rows(database: AsyncEngine) -> list[tuple[Any, ...]]:
    """Every outbox row as the planner wrote it (its write time left out), in key order."""
    async with database.connect() as connection:
        rows = await connection.execute(
            select(
                Outbox.dedupe_key,
                Outbox.channel,
                Outbox.recipient,
                Outbox.kind,
                Outbox.body,
                Outbox.template,
                Outbox.params,
                Outbox.status,
                Outbox.not_before,
            ).order_by(Outbox.dedupe_key)
        )
        return [tuple(row) for row in rows]


async def statuses(database: AsyncEngine) -> dict[int, str]:
    async with database.connect() as connection:
        rows = await connection.execute(select(Sponsorship.id, Sponsorship.status))
        return {sponsorship_id: str(status) for sponsorship_id, status in rows}


async def pages_of_a_run(database: AsyncEngine, chunk_size: int) -> int:
    """Pages a run from the current state takes: full pages of the dues-bearing ones, then
    a short one (an empty one when the last is full) that also writes the payroll lines."""
    async with database.connect() as connection:
        rows = await connection.execute(
            select(Sponsorship.id).where(Sponsorship.status.in_(DUES_BEARING))
        )
        return len(rows.all()) // chunk_size + 1


async def attempts(database: AsyncEngine) -> list[tuple[str, str, int]]:
    """(owner, status, pages) of every reminder attempt, oldest first."""
    async with database.connect() as connection:
        rows = await connection.execute(
            select(PlannerRun.owner, PlannerRun.status, PlannerRun.chunks)
            .where(PlannerRun.job == JOB_REMINDERS)
            .order_by(PlannerRun.id)
        )
        return [tuple(row) for row in rows]


@pytest.fixture
async def province(db_engine: AsyncEngine) -> AsyncEngine:
    await seed(db_engine, SPONSORSHIPS)
    return db_engine


@pytest.fixture
async def second_engine(database_url: str, province: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """Another process's engine on the same database."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def reference(
    database: AsyncEngine,
) -> tuple[PlanResult, list[tuple[Any, ...]], dict[int, str]]:
    """One uninterrupted run in one transaction (the planner before pages), then undone."""
    result = await planner(database, FrozenClock(NOW), None).plan()
    rows, lapsed = await outbox_rows(database), await statuses(database)
    await reset(database)
    return result, rows, lapsed


async def test_pages_write_exactly_the_rows_of_one_transaction(province: AsyncEngine) -> None:
    whole, whole_rows, whole_statuses = await reference(province)
    # The small province still has every kind the planner writes.
    assert min(whole.before5, whole.overdue, whole.escalation, whole.payroll, whole.lapsed) > 0
    pages: list[int] = []

    async def count(_connection: AsyncConnection, done: int, _result: PlanResult) -> None:
        pages.append(done)

    paged = await planner(province, FrozenClock(NOW), 7).plan(on_chunk=count)
    assert paged == whole
    assert await outbox_rows(province) == whole_rows
    assert await statuses(province) == whole_statuses
    # ~235 dues-bearing sponsorships in pages of 7, the payroll lines in the last one.
    assert len(pages) > 30 and pages == list(range(1, len(pages) + 1))
    again = await planner(province, FrozenClock(NOW), 7).plan()
    assert again == PlanResult()


async def test_two_processes_at_the_same_tick_plan_once(
    province: AsyncEngine, second_engine: AsyncEngine, database_url: str
) -> None:
    _, expected_rows, _ = await reference(province)
    clock = FrozenClock(NOW)
    first = planning(province, clock, "process-a")
    second = planning(second_engine, clock, "process-b")
    if is_sqlite(database_url):
        # SQLite runs one in-loop connection per engine: two runs at once in one
        # event loop would wait on each other's write lock on the loop's thread.
        outcomes = [await first.tick(), await second.tick()]
    else:
        outcomes = list(await asyncio.gather(first.tick(), second.tick()))
    planned = sorted(
        (outcome[JOB_REMINDERS] for outcome in outcomes), key=lambda rows: rows is None
    )
    assert planned == [len(expected_rows), None]
    assert await outbox_rows(province) == expected_rows
    assert await planner_runs.done_count(province, job=JOB_REMINDERS, run_key="2026-11-11") == 1
    # The next ticks of the day find the run done.
    assert await first.tick() == {JOB_REMINDERS: None}
    assert await second.tick() == {JOB_REMINDERS: None}
    assert [status for _, status, _ in await attempts(province)] == ["done"]


async def test_a_run_killed_midway_is_finished_by_another_process_without_duplicates(
    province: AsyncEngine, second_engine: AsyncEngine
) -> None:
    whole, expected_rows, expected_statuses = await reference(province)
    clock = FrozenClock(NOW)
    stuck = asyncio.Event()

    class Dying(ReminderPlanner):
        """Stops in its third page's transaction, as a process killed there would."""

        async def plan(self, **hooks: Any) -> PlanResult:
            renew = hooks["on_chunk"]

            async def on_chunk(connection: AsyncConnection, pages: int, result: PlanResult) -> None:
                await renew(connection, pages, result)
                if pages == 3:
                    stuck.set()
                    await asyncio.Event().wait()  # until cancelled, the page uncommitted

            return await super().plan(on_chunk=on_chunk)

    dying = Dying(
        province,
        Catalogs(),
        clock,
        timezone=JAKARTA,
        calendar=WorkCalendar([]),
        tariff=DEFAULT_TARIFF,
        chunk_size=7,
    )
    first = planning(province, clock, "process-a", reminders=dying)
    second = planning(second_engine, clock, "process-b")
    running = asyncio.create_task(first.tick())
    await asyncio.wait_for(stuck.wait(), timeout=30)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    partial = await outbox_rows(province)
    assert 0 < len(partial) < len(expected_rows)
    # Its lease still holds: the other process's tick leaves the run alone.
    assert await second.tick() == {JOB_REMINDERS: None}
    clock.advance(timedelta(seconds=LEASE_S + 1))
    pages = await pages_of_a_run(province, 7)
    finished = await second.tick()
    assert finished[JOB_REMINDERS] == whole.notices - len(partial)
    assert await outbox_rows(province) == expected_rows
    assert await statuses(province) == expected_statuses
    assert await attempts(province) == [("process-a", "abandoned", 2), ("process-b", "done", pages)]


async def test_a_chat_is_answered_between_two_pages_of_a_run(
    province: AsyncEngine, database_url: str
) -> None:
    """With its own engine (SQLite: its own connection), the planner holds no transaction
    between pages: a chat's step (its own BEGIN IMMEDIATE on SQLite) completes there."""
    clock = FrozenClock(NOW)
    bot = build_engine(async_sessionmaker(province, expire_on_commit=False), clock)
    chat = Chat(bot, clock, sender="555001")
    planner_engine = create_engine(database_url, busy_timeout_ms=200)
    answered: list[tuple[int, int]] = []

    async def chat_step(pages: int) -> None:
        if pages == 2:
            replies = await chat.say("/start")
            async with planner_engine.connect() as connection:
                written = await connection.scalar(
                    select(Outbox.id).order_by(Outbox.id.desc()).limit(1)
                )
            answered.append((len(replies), int(written or 0)))

    try:
        result = await planner(planner_engine, clock, 5).plan(between_pages=chat_step)
    finally:
        await planner_engine.dispose()
    assert len(answered) == 1
    replies, outbox_rows_by_then = answered[0]
    assert replies >= 1 and chat.text  # the step answered
    # It came after the run's first pages and before the rest of them.
    assert outbox_rows_by_then > 0
    assert result.notices > 0
    async with province.connect() as connection:
        last = await connection.scalar(select(Outbox.id).order_by(Outbox.id.desc()).limit(1))
    assert int(last or 0) > outbox_rows_by_then


async def test_the_off_loop_run_plans_the_same_rows_in_a_child_process(
    province: AsyncEngine, database_url: str
) -> None:
    if database_url.endswith(":memory:"):
        pytest.skip("a child process cannot see an in-memory database")
    whole, expected_rows, _ = await reference(province)
    pages = await pages_of_a_run(province, 7)
    clock = FrozenClock(NOW)
    child = planning(province, clock, "process-a", off_loop=OffLoop(database_url))
    assert await child.tick() == {JOB_REMINDERS: whole.notices}
    assert await outbox_rows(province) == expected_rows
    assert await attempts(province) == [("process-a", "done", pages)]


def _wal_bytes(database: Path) -> int:
    wal = Path(f"{database}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_the_benchs_seeded_sqlite_province_is_whole_in_a_copy_of_its_file(
    tmp_path: Path,
) -> None:
    """`bench_reminders --sqlite-seed`: the province seeded into a file once (its WAL
    checkpointed into it), each run on a copy of the file alone, which holds it all."""
    seeded = tmp_path / "province.sqlite3"
    await seed_sqlite_file(seeded, 30, 2)
    assert _wal_bytes(seeded) == 0
    (tmp_path / "run").mkdir()
    url = sqlite_copy(seeded, str(tmp_path / "run"))
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'run' / 'bench.sqlite3'}"
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            sponsorships = await connection.scalar(select(func.count()).select_from(Sponsorship))
            payments = await connection.scalar(select(func.count()).select_from(Payment))
    finally:
        await engine.dispose()
    assert (sponsorships, payments) == (60, 2 * len(list(dues_payments(30))))
