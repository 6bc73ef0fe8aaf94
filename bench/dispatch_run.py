"""What the dispatcher benchmarks share: a fresh database (SQLite, or PostgreSQL for several
dispatchers sharing the send budget), running the real dispatchers until the outbox is
drained, and the delivery rates read off the fake server's clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.vocabulary import OutboxStatus
from scheduler.dispatcher import Dispatcher
from storage.db import create_engine, is_sqlite
from storage.migrate import upgrade_to_head
from storage.outbox import counts_by_status

#: Seconds between two progress lines.
PROGRESS_EVERY_S = 10.0
#: Round trips the benchmarks measure by default (ms the fake server holds each answer).
ROUND_TRIPS_MS = (0, 100, 250)


@contextlib.asynccontextmanager
async def fresh_database(url: str | None, folder: Path) -> AsyncIterator[str]:
    """A migrated, empty database: a new SQLite file in `folder`, or `url` (PostgreSQL)
    with its public schema dropped first: never point it at real data."""
    if url is None or is_sqlite(url):
        url = f"sqlite+aiosqlite:///{folder / 'outbox.sqlite3'}"
    else:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.exec_driver_sql("DROP SCHEMA public CASCADE")
                await connection.exec_driver_sql("CREATE SCHEMA public")
        finally:
            await engine.dispose()
    await upgrade_to_head(url)
    yield url


async def drain(
    db: AsyncEngine,
    dispatchers: Sequence[Dispatcher],
    notices: int,
    progress: Callable[[int], str],
) -> tuple[float, float]:
    """Run `dispatchers` until all `notices` rows are sent or failed; (wall s, CPU s).

    Every `PROGRESS_EVERY_S` prints `progress(rows sent)`.
    """
    stop = asyncio.Event()
    started = time.perf_counter()
    cpu_started = time.process_time()
    running = [asyncio.create_task(dispatcher.run(stop)) for dispatcher in dispatchers]
    try:
        last_report = time.perf_counter()
        while True:
            async with db.connect() as connection:
                counts = await counts_by_status(connection)
            if counts[OutboxStatus.SENT] + counts[OutboxStatus.FAILED] >= notices:
                break
            if time.perf_counter() - last_report >= PROGRESS_EVERY_S:
                last_report = time.perf_counter()
                print(f"  ... {progress(counts[OutboxStatus.SENT])}", flush=True)
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*running)
    return time.perf_counter() - started, time.process_time() - cpu_started


def send_rates(times: Sequence[float]) -> tuple[float, float]:
    """(achieved, steady) messages/s of sends at `times` (server clock, seconds).

    Achieved: all sends over the span from the first to the last; steady: the
    same without the first second.
    """
    ordered = sorted(times)
    span = ordered[-1] - ordered[0] if len(ordered) > 1 else 0.0
    first_second = sum(1 for at in ordered if at < ordered[0] + 1.0)
    steady_span = span - 1.0
    achieved = len(ordered) / span if span else 0.0
    steady = (len(ordered) - first_second) / steady_span if steady_span > 0 else 0.0
    return achieved, steady


def busiest_second(times: Sequence[float]) -> int:
    """The most sends in any sliding second (what a platform's flood control counts)."""
    ordered = sorted(times)
    most = 0
    first = 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most
