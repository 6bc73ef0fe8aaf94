"""`CoverageCache` serves figures at most `max_age` old and reads them again in the background."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.workdays import WorkCalendar
from storage.coverage import CoverageTargets
from storage.coverage_cache import CoverageCache
from tests.storage.test_roles import add_account, add_asn, add_opd

ZONE = ZoneInfo("Asia/Jakarta")


class Clock:
    def __init__(self) -> None:
        # Tuesday 5 January 2027, 23:50 WIB.
        self.now = datetime(2027, 1, 5, 16, 50, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def add_registered_asn(engine: AsyncEngine, opd_id: int, name: str) -> None:
    async with engine.begin() as connection:
        account = await add_account(connection, name)
        await add_asn(connection, opd_id=opd_id, account_id=account)


def cache_for(engine: AsyncEngine, clock: Clock, max_age: timedelta) -> CoverageCache:
    return CoverageCache(
        engine,
        targets=CoverageTargets(overall=100, per_opd={"DINKES": 10}),
        calendar=WorkCalendar([]),
        zone=ZONE,
        clock=clock,
        max_age=max_age,
    )


async def test_figures_are_served_until_too_old_then_read_again_behind_the_page(
    db_engine: AsyncEngine,
) -> None:
    async with db_engine.begin() as connection:
        dinkes = await add_opd(connection, "DINKES", "Dinas Kesehatan")
    await add_registered_asn(db_engine, dinkes, "a1")
    clock = Clock()
    cache = cache_for(db_engine, clock, timedelta(seconds=60))

    first = await cache.dashboard(opd_id=None)
    assert (first.tiles.asn_registered, first.computed_at) == (1, clock.now)
    assert first.today.isoformat() == "2027-01-05"  # the local day, not UTC's
    assert first.progress.target == 100

    await add_registered_asn(db_engine, dinkes, "a2")
    clock.now += timedelta(seconds=60)
    assert await cache.dashboard(opd_id=None) is first  # not older than max_age
    # One OPD is a scope of its own: read now.
    own = await cache.dashboard(opd_id=dinkes)
    assert (own.tiles.asn_registered, own.progress.target) == (2, 10)

    clock.now += timedelta(seconds=1)
    stale = await cache.dashboard(opd_id=None)
    assert stale is first  # too old: still served at once, read again behind it
    await cache.aclose()
    fresh = await cache.dashboard(opd_id=None)
    assert (fresh.tiles.asn_registered, fresh.computed_at) == (2, clock.now)

    # Past local midnight (00:00 WIB) the new day is a scope of its own.
    clock.now = datetime(2027, 1, 5, 17, 0, tzinfo=UTC)
    assert (await cache.dashboard(opd_id=None)).today.isoformat() == "2027-01-06"
    cache.invalidate()
    await add_registered_asn(db_engine, dinkes, "a3")
    assert (await cache.dashboard(opd_id=None)).tiles.asn_registered == 3


async def test_max_age_zero_reads_every_time(db_engine: AsyncEngine) -> None:
    async with db_engine.begin() as connection:
        dinkes = await add_opd(connection, "DINKES", "Dinas Kesehatan")
    cache = cache_for(db_engine, Clock(), timedelta(0))
    assert (await cache.dashboard(opd_id=None)).tiles.asn_registered == 0
    await add_registered_asn(db_engine, dinkes, "a1")
    assert (await cache.dashboard(opd_id=None)).tiles.asn_registered == 1


async def test_concurrent_first_requests_share_one_read(db_engine: AsyncEngine) -> None:
    async with db_engine.begin() as connection:
        await add_opd(connection, "DINKES", "Dinas Kesehatan")
    cache = cache_for(db_engine, Clock(), timedelta(seconds=60))
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(db_engine.sync_engine, "before_cursor_execute", count)
    try:
        boards = await asyncio.gather(*(cache.dashboard(opd_id=None) for _ in range(5)))
        one_read = len(statements)
        statements.clear()
        alone = await cache_for(db_engine, Clock(), timedelta(0)).dashboard(opd_id=None)
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", count)
    assert all(board is boards[0] for board in boards)
    assert one_read == len(statements) > 0
    assert alone.tiles == boards[0].tiles


def test_a_negative_max_age_is_refused(db_engine: AsyncEngine) -> None:
    with pytest.raises(ValueError):
        cache_for(db_engine, Clock(), timedelta(seconds=-1))
