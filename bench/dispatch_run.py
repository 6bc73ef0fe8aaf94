"""What the dispatcher benchmarks share: running the real dispatcher until the outbox is
drained, and the delivery rates read off the fake server's clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.vocabulary import OutboxStatus
from scheduler.dispatcher import Dispatcher
from storage.outbox import counts_by_status

#: Seconds between two progress lines.
PROGRESS_EVERY_S = 10.0


async def drain(
    db: AsyncEngine, dispatcher: Dispatcher, notices: int, progress: Callable[[int], str]
) -> tuple[float, float]:
    """Run `dispatcher` until all `notices` rows are sent or failed; (wall s, CPU s).

    Every `PROGRESS_EVERY_S` prints `progress(rows sent)`.
    """
    stop = asyncio.Event()
    started = time.perf_counter()
    cpu_started = time.process_time()
    running = asyncio.create_task(dispatcher.run(stop))
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
        await running
    return time.perf_counter() - started, time.process_time() - cpu_started


def send_rates(times: Sequence[float]) -> tuple[float, float]:
    """(achieved, steady) messages/s of sends at `times` (server clock, seconds).

    Achieved: all sends over the span from the first to the last; steady: the
    same without the first second's burst.
    """
    ordered = sorted(times)
    span = ordered[-1] - ordered[0] if len(ordered) > 1 else 0.0
    first_second = sum(1 for at in ordered if at < ordered[0] + 1.0)
    steady_span = span - 1.0
    achieved = len(ordered) / span if span else 0.0
    steady = (len(ordered) - first_second) / steady_span if steady_span > 0 else 0.0
    return achieved, steady
