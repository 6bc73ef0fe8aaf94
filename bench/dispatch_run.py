"""What the dispatcher benchmarks share: a fresh database (SQLite, or PostgreSQL for several
dispatchers sharing the send budget), the fake platform in a process of its own
(`FakeInChild`), running the real dispatchers until the outbox is drained, and the delivery
rates read off the fake server's clock."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import gc
import multiprocessing
import multiprocessing.process
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.vocabulary import OutboxStatus
from scheduler.dispatcher import CountsMessages, Dispatcher
from scheduler.sending import OutgoingNotice, Sender, SendResult
from storage.db import create_engine, is_sqlite
from storage.migrate import upgrade_to_head
from storage.outbox import counts_by_status

T = TypeVar("T")

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
    progress: Callable[[int], Awaitable[str]],
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
                print(f"  ... {await progress(counts[OutboxStatus.SENT])}", flush=True)
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*running)
    return time.perf_counter() - started, time.process_time() - cpu_started


def both_sides(seen: FakeReport, senders: Sequence[CountingSender]) -> dict[str, Any]:
    """A case's result fields on what the fake's process and the dispatchers' senders saw."""
    flights = [sender.summary() for sender in senders]
    return {
        "fake_cpu_s": seen.cpu_s,
        "fake_loop_lag_ms": seen.loop_lag_ms,
        "start_to_arrival_ms": start_to_arrival_ms(senders, seen.arrivals),
        **{key: max(flight[key] for flight in flights) for key in flights[0]},
    }


def describe_both_sides(result: Mapping[str, Any]) -> str:
    """The fields of `both_sides` (and the wall and CPU times) as a report line's end."""
    lag_p99, lag_max = result["fake_loop_lag_ms"][1], result["fake_loop_lag_ms"][2]
    arrival = "/".join(f"{lag:.0f}" for lag in result["start_to_arrival_ms"])
    return (
        f"in flight at a send's start: mean {result['in_flight_mean']:.1f}, max "
        f"{result['in_flight_max']}; send p50/p99 {result['send_ms_p50']:.0f}/"
        f"{result['send_ms_p99']:.0f} ms; fake's loop lag p99 {lag_p99:.1f} ms (max "
        f"{lag_max:.0f}); start to arrival p50/p99/max {arrival} ms; wall "
        f"{result['wall_s']:.1f} s, CPU {result['cpu_s']:.1f} s (fake {result['fake_cpu_s']:.1f} s)"
    )


def add_shared_options(parser: argparse.ArgumentParser, *, default_margin: float) -> None:
    """The options both dispatcher benches take: round trips, dispatchers, margin, profile."""
    parser.add_argument(
        "--round-trip-ms", type=int, nargs="+", default=list(ROUND_TRIPS_MS),
        help="the fake server holds each answer this long; one case per value",
    )  # fmt: skip
    parser.add_argument("--dispatchers", type=int, default=1, help="sharing one budget (PG)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (wiped!)")
    parser.add_argument(
        "--margin", type=float, default=default_margin,
        help="share of the rate kept unused (DISPATCH_RATE_MARGIN)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", default=None, metavar="PATH",
        help="cProfile the dispatcher's process, one PATH.<case>.prof per case",
    )  # fmt: skip


def start_to_arrival_ms(
    senders: Sequence[CountingSender], arrivals: Sequence[tuple[str, float]]
) -> tuple[float, float, float]:
    """From a send's start in the dispatcher to the fake's arrival stamp, p50 / p99 / max in
    ms (the last send to each recipient, the one accepted; both stamps time.monotonic())."""
    started: dict[str, float] = {}
    for sender in senders:  # a row handed back may be sent again by another dispatcher
        for recipient, at in sender.started_at.items():
            started[recipient] = max(at, started.get(recipient, at))
    first: dict[str, float] = {}
    for recipient, at in arrivals:
        first.setdefault(recipient, at)
    lags = sorted(
        1000 * (at - started[recipient]) for recipient, at in first.items() if recipient in started
    ) or [0.0]
    return lags[len(lags) // 2], lags[min(len(lags) - 1, len(lags) * 99 // 100)], lags[-1]


def profiled(path: str | None, work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`, under cProfile when `path` is given (the stats written there)."""
    if path is None:
        return asyncio.run(work)
    profile = cProfile.Profile()
    try:
        return profile.runcall(asyncio.run, work)
    finally:
        profile.dump_stats(path)
        print(f"  profile: {path}", flush=True)


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


# --- the fake platform in a process of its own ---------------------------------------------

#: The fake's scheduling priority (nice): it stands for the platform's servers, which our
#: load does not slow down; on a machine shared with other work, a fake at the normal
#: priority was descheduled for up to 360 ms (its loop's lag) and then stamped the requests
#: that had waited in its socket as arriving together: refusals the platform would not give.
FAKE_NICENESS = -10


class HostedFake(Protocol):
    """A fake platform server as `FakeInChild` runs it in the child process."""

    async def start(self) -> dict[str, Any]:
        """Start serving; what the parent needs to reach it (base URL, token, ...)."""
        ...

    def refusals(self) -> dict[str, int]:
        """Refusals so far, by kind (what the progress lines print)."""
        ...

    def arrivals(self) -> list[tuple[str, float]]:
        """Every accepted message: (recipient, the server's arrival stamp, time.monotonic())."""
        ...

    async def close(self) -> None:
        """Stop serving."""
        ...


@dataclasses.dataclass(slots=True, frozen=True)
class FakeReport:
    """What the fake saw, in its own process: accepted messages, refusals, its CPU time."""

    arrivals: list[tuple[str, float]]
    refusals: dict[str, int]
    cpu_s: float
    #: Its event loop's lag: how late a 10 ms timer fired, p50 / p99 / max, in ms.
    loop_lag_ms: tuple[float, float, float]


class FakeInChild:
    """Runs `factory(**options)` (a `HostedFake`) in a child process (spawn) on its own event
    loop, so the arrivals it stamps and the refusals it counts are the platform's view, not
    delayed by the dispatcher's loop: in one process, a loaded CPU bunched the fake's arrival
    stamps (p99 20-40 ms behind the sends' starts) into refusals the platform would not give.

    `factory` must be importable by name (a module-level class or function). Use
    The child runs at `niceness` (default `FAKE_NICENESS`; 0 leaves it as the parent's). Use
    `async with FakeInChild(...) as fake:` then `fake.reached` (what `start()` returned),
    `await fake.refusals()` while it runs and `await fake.finish()` for the `FakeReport`.
    """

    def __init__(
        self, factory: Callable[..., HostedFake], *, niceness: int = FAKE_NICENESS, **options: Any
    ) -> None:
        self._factory = factory
        self._niceness = niceness
        self._options = options
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: Connection | None = None
        self._asking = asyncio.Lock()
        self.reached: dict[str, Any] = {}

    async def __aenter__(self) -> FakeInChild:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_host_fake,
            args=(self._factory, self._options, self._niceness, child),
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._pipe = process, parent
        self.reached = await self._receive()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.is_alive():
            with contextlib.suppress(Exception):
                await self.finish()
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()

    async def refusals(self) -> dict[str, int]:
        """The fake's refusals so far."""
        return dict(await self._ask("refusals"))

    async def finish(self) -> FakeReport:
        """Stop the fake; what it saw."""
        report = await self._ask("finish")
        assert isinstance(report, FakeReport)
        return report

    async def _ask(self, command: str) -> Any:
        assert self._pipe is not None
        async with self._asking:
            self._pipe.send(command)
            return await self._receive()

    async def _receive(self) -> Any:
        assert self._pipe is not None
        answer = await asyncio.get_running_loop().run_in_executor(None, self._pipe.recv)
        if isinstance(answer, BaseException):
            raise RuntimeError("the fake's process failed") from answer
        return answer


def _host_fake(
    factory: Callable[..., HostedFake], options: dict[str, Any], niceness: int, pipe: Connection
) -> None:
    """The child process: serve the fake until the parent says "finish"."""
    if niceness:
        # Raising the priority needs root (or CAP_SYS_NICE); without it the fake runs as is.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
    try:
        asyncio.run(_serve_fake(factory(**options), pipe))
    except BaseException as exc:  # the parent raises it
        with contextlib.suppress(Exception):
            pipe.send(exc)
        raise
    finally:
        pipe.close()


async def _serve_fake(fake: HostedFake, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    reached = await fake.start()
    # What the child imported (the bench's modules: SQLAlchemy, pywa, aiogram) never becomes
    # garbage; frozen, a full collection skips it. Unfrozen, one collection during a run
    # took 0.5 s, and the requests that waited meanwhile were stamped as arriving together.
    gc.collect()
    gc.freeze()
    lags: list[float] = []
    watching = asyncio.create_task(_watch_lag(lags))
    cpu_started = time.process_time()
    pipe.send(reached)
    try:
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "refusals":
                pipe.send(fake.refusals())
                continue
            watching.cancel()
            await fake.close()
            ordered = sorted(lags) or [0.0]
            pipe.send(
                FakeReport(
                    arrivals=fake.arrivals(),
                    refusals=fake.refusals(),
                    cpu_s=time.process_time() - cpu_started,
                    loop_lag_ms=(
                        1000 * ordered[len(ordered) // 2],
                        1000 * ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)],
                        1000 * ordered[-1],
                    ),
                )
            )
            return
    finally:
        watching.cancel()


async def _watch_lag(lags: list[float], every_s: float = 0.01) -> None:
    """How late a timer of `every_s` fires on this loop, sample after sample."""
    while True:
        planned = time.monotonic() + every_s
        await asyncio.sleep(every_s)
        lags.append(max(0.0, time.monotonic() - planned))


# --- what the sends do, seen from the dispatcher's side -----------------------------------


class CountingSender:
    """Wraps a channel's `Sender`: how many sends are in flight when each starts, and each
    send's round trip as the dispatcher's process sees it (for the profile in BENCHMARKS)."""

    def __init__(self, inner: Sender) -> None:
        self._inner = inner
        self.channel = inner.channel
        self.in_flight = 0
        self.in_flight_at_start: list[int] = []
        self.round_trips_s: list[float] = []
        #: The last send's start to each recipient (time.monotonic(), the fake's clock too).
        self.started_at: dict[str, float] = {}

    def message_count(self, notice: OutgoingNotice) -> int:
        if isinstance(self._inner, CountsMessages):
            return self._inner.message_count(notice)
        return 1

    async def send(self, notice: OutgoingNotice) -> SendResult:
        self.in_flight_at_start.append(self.in_flight)
        self.in_flight += 1
        self.started_at[notice.recipient] = time.monotonic()
        started = time.perf_counter()
        try:
            return await self._inner.send(notice)
        finally:
            self.in_flight -= 1
            self.round_trips_s.append(time.perf_counter() - started)

    def summary(self) -> dict[str, float]:
        """In flight at a send's start (mean, max); the sends' round trips (p50, p99) in ms."""
        flights = self.in_flight_at_start or [0]
        trips = sorted(self.round_trips_s) or [0.0]
        return {
            "in_flight_mean": sum(flights) / len(flights),
            "in_flight_max": max(flights),
            "send_ms_p50": 1000 * trips[len(trips) // 2],
            "send_ms_p99": 1000 * trips[min(len(trips) - 1, len(trips) * 99 // 100)],
        }
