"""Several pages of the reminder planner at once (`pages_in_flight`, PostgreSQL).

The rows written, the lapses and the run's ledger must be those of the planner
one page at a time; a failure in one page must stop the others and leave only
whole pages, which the next attempt completes. On SQLite `pages_in_flight` is
ignored (one writer): the same rows, one page at a time.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.bench_reminders import reset
from bench.province import NOW
from domain.tariff import DEFAULT_TARIFF
from domain.workdays import WorkCalendar
from handlers.i18n import Catalogs
from scheduler.planning import JOB_REMINDERS, OffLoop
from scheduler.reminders import PlanResult, ReminderPlanner
from tests.fakes.clock import FrozenClock
from tests.scheduler.test_planning import (
    JAKARTA,
    LEASE_S,
    attempts,
    outbox_rows,
    pages_of_a_run,
    planning,
    province,  # noqa: F401  (fixture)
    statuses,
)

CHUNK = 7


def in_flight(database: AsyncEngine, clock: FrozenClock, pages: int) -> ReminderPlanner:
    return ReminderPlanner(
        database,
        Catalogs(),
        clock,
        timezone=JAKARTA,
        calendar=WorkCalendar([]),
        tariff=DEFAULT_TARIFF,
        chunk_size=CHUNK,
        pages_in_flight=pages,
    )


async def one_at_a_time(
    database: AsyncEngine,
) -> tuple[PlanResult, list[tuple[Any, ...]], dict[int, str]]:
    """The run one page at a time (the reference), then undone."""
    result = await in_flight(database, FrozenClock(NOW), 1).plan()
    rows, lapsed = await outbox_rows(database), await statuses(database)
    await reset(database)
    return result, rows, lapsed


def postgresql(database: AsyncEngine) -> bool:
    return database.dialect.name == "postgresql"


async def test_pages_in_flight_write_exactly_the_rows_of_one_page_at_a_time(
    province: AsyncEngine,  # noqa: F811
) -> None:
    expected, expected_rows, expected_statuses = await one_at_a_time(province)
    # Every kind the planner writes is there to compare.
    assert min(expected.before5, expected.overdue, expected.escalation, expected.payroll) > 0
    assert expected.lapsed > 0 and expected.lapse_notices > 0
    pages = await pages_of_a_run(province, CHUNK)
    inside, most_inside, calls = 0, 0, []
    backends: set[int] = set()

    async def watch(connection: AsyncConnection, done: int, _result: PlanResult) -> None:
        nonlocal inside, most_inside
        calls.append(done)
        if postgresql(province):
            backends.add(int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0))
        inside += 1
        most_inside = max(most_inside, inside)
        await asyncio.sleep(0.005)  # a page's transaction left open a moment
        inside -= 1

    result = await in_flight(province, FrozenClock(NOW), 3).plan(on_chunk=watch)
    assert result == expected
    assert await outbox_rows(province) == expected_rows
    assert await statuses(province) == expected_statuses
    # Every page reported, the last report the run's page count.
    assert calls[-1] == pages and sorted(set(calls)) == list(range(1, pages + 1))
    if postgresql(province):
        # Pages were open at once, on several connections.
        assert most_inside >= 2 and len(backends) >= 2
    else:
        assert most_inside == 1
    again = await in_flight(province, FrozenClock(NOW), 3).plan()
    assert again == PlanResult()
    assert await outbox_rows(province) == expected_rows


async def test_pages_in_flight_off_the_loop_renew_one_lease(
    province: AsyncEngine,  # noqa: F811
    database_url: str,
) -> None:
    """In a child process, as the bot runs it: every page renews the one attempt's
    lease (two pages' renewals of one row wait for each other), the ledger records
    the run's pages, and the rows are those of one page at a time."""
    if database_url.endswith(":memory:"):
        pytest.skip("a child process cannot see an in-memory database")
    expected, expected_rows, expected_statuses = await one_at_a_time(province)
    pages = await pages_of_a_run(province, CHUNK)
    clock = FrozenClock(NOW)
    child = planning(
        province,
        clock,
        "process-a",
        off_loop=OffLoop(database_url),
        reminders=in_flight(province, clock, 2),
    )
    assert await child.tick() == {JOB_REMINDERS: expected.notices}
    assert await outbox_rows(province) == expected_rows
    assert await statuses(province) == expected_statuses
    assert await attempts(province) == [("process-a", "done", pages)]


async def test_a_failing_page_stops_the_others_and_the_next_attempt_completes_the_run(
    province: AsyncEngine,  # noqa: F811
) -> None:
    _, expected_rows, expected_statuses = await one_at_a_time(province)
    clock = FrozenClock(NOW)

    class Broken(RuntimeError):
        pass

    async def fail_at_fourth(_connection: AsyncConnection, done: int, _r: PlanResult) -> None:
        if done >= 4:
            raise Broken(f"page {done}")

    with pytest.raises(Broken):
        await in_flight(province, clock, 3).plan(on_chunk=fail_at_fourth)
    partial = await outbox_rows(province)
    # Whole pages only, short of the run; no task left running.
    assert 0 < len(partial) < len(expected_rows)
    assert all(row in expected_rows for row in partial)
    await asyncio.sleep(0.05)
    assert await outbox_rows(province) == partial
    clock.advance(timedelta(seconds=LEASE_S))
    await in_flight(province, clock, 3).plan()
    assert await outbox_rows(province) == expected_rows
    assert await statuses(province) == expected_statuses


def test_pages_in_flight_must_be_at_least_one(db_engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="pages_in_flight"):
        in_flight(db_engine, FrozenClock(NOW), 0)
