"""The coverage page's figures, read at most once per `max_age` per scope and day.

Why: reading them costs seconds for a province (144,000 sponsorships, about
900,000 payment rows: the paid-until distribution alone aggregates every
confirmed payment; `bench.bench_coverage`, docs/BENCHMARKS.md), far above
the page's 300 ms. A program leader's view of coverage per week does not need
to be younger than a minute, so the page shows the last figures read, says
when they were read (`CoverageDashboard.computed_at`), and reads them again in
the background once they are older than `max_age` (stale-while-revalidate):
only the very first request of a scope and day waits for the read. Concurrent
requests for a scope being read wait for that one read, never start another.

`max_age` 0 turns the cache off: every request reads (the tests, and an
operator who prefers exact figures to fast pages). The cache is per process
(several processes behind a load balancer each keep their own) and bounded
(`capacity` scopes; the oldest dropped first). A failed background read keeps
the previous figures and is tried again at the next request.

Each read opens its own connection from the engine: on SQLite the pool holds
one connection, so a caller must not hold one while it awaits `dashboard()`
(it would wait for itself until the pool's timeout).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta, tzinfo

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.workdays import WorkCalendar
from storage.coverage import CoverageDashboard, CoverageTargets, dashboard

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_Key = tuple[int | None, date, int]


class CoverageCache:
    """`dashboard()` figures per (OPD or province, local day, weeks), read again in the
    background when older than `max_age`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        targets: CoverageTargets,
        calendar: WorkCalendar,
        zone: tzinfo,
        clock: Clock,
        max_age: timedelta = timedelta(seconds=60),
        capacity: int = 128,
    ) -> None:
        if max_age < timedelta(0):
            raise ValueError("max_age must not be negative")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._engine = engine
        self._targets = targets
        self._calendar = calendar
        self._zone = zone
        self._clock = clock
        self._max_age = max_age
        self._capacity = capacity
        self._entries: dict[_Key, CoverageDashboard] = {}
        self._reads: dict[_Key, asyncio.Task[CoverageDashboard]] = {}

    async def dashboard(self, *, opd_id: int | None, weeks: int = 12) -> CoverageDashboard:
        """The figures of one OPD (or the province, None) as of today in the province's zone."""
        now = self._clock()
        key = (opd_id, now.astimezone(self._zone).date(), weeks)
        if not self._max_age:
            return await self._read(key)
        entry = self._entries.get(key)
        if entry is None:
            return await asyncio.shield(self._start(key))
        assert entry.computed_at is not None
        if now - entry.computed_at > self._max_age:
            self._start(key)
        return entry

    def invalidate(self) -> None:
        """Forget every figure (the next request of each scope reads again)."""
        self._entries.clear()

    async def aclose(self) -> None:
        """Wait for the reads in progress (call before disposing of the engine)."""
        reads = list(self._reads.values())
        if reads:
            await asyncio.gather(*reads, return_exceptions=True)

    def _start(self, key: _Key) -> asyncio.Task[CoverageDashboard]:
        task = self._reads.get(key)
        if task is None:
            task = asyncio.create_task(self._read(key), name=f"coverage-read-{key[0]}")
            self._reads[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def _finished(self, key: _Key, task: asyncio.Task[CoverageDashboard]) -> None:
        self._reads.pop(key, None)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.warning("reading the coverage figures failed: %r", error)
            return
        if not self._max_age:
            return
        self._entries.pop(key, None)
        self._entries[key] = task.result()
        while len(self._entries) > self._capacity:
            del self._entries[next(iter(self._entries))]

    async def _read(self, key: _Key) -> CoverageDashboard:
        opd_id, today, weeks = key
        started = self._clock()
        async with self._engine.connect() as connection:
            figures = await dashboard(
                connection,
                opd_id=opd_id,
                today=today,
                targets=self._targets,
                calendar=self._calendar,
                zone=self._zone,
                weeks=weeks,
            )
        return dataclasses.replace(figures, computed_at=started)
