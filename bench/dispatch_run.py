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
import itertools
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
    *,
    watch: ProcessWatch | None = None,
    freeze: bool = True,
) -> tuple[float, float]:
    """Run `dispatchers` until all `notices` rows are sent or failed; (wall s, CPU s).

    Every `PROGRESS_EVERY_S` prints `progress(rows sent)`. With `freeze`, the start-up
    heap (the imported modules, the engines, the clients) is frozen first, as `sertakan
    run` does after start-up (bot/cli.py): without it, one full collection of this heap
    stalled the dispatchers' process for 0.3-1.1 s per case on the shared machine, a
    stall the product does not have. `watch` records this process's loop lag and
    collections meanwhile.
    """
    if freeze:
        gc.collect()
        gc.freeze()
    stop = asyncio.Event()
    started = time.perf_counter()
    cpu_started = time.process_time()
    running = [asyncio.create_task(dispatcher.run(stop)) for dispatcher in dispatchers]
    watching = asyncio.create_task(watch.run()) if watch is not None else None
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
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        if freeze:
            gc.unfreeze()
    return time.perf_counter() - started, time.process_time() - cpu_started


class ProcessWatch:
    """The dispatchers' process while they run: how late a 10 ms timer fires on its event
    loop (a stall: the system did not run it, or it was busy) and its garbage collections
    (each one's pause, by generation), to tell a gap in the arrivals from the claims."""

    def __init__(self, every_s: float = 0.01) -> None:
        self._every_s = every_s
        #: (when the timer was due, how late it fired), time.monotonic().
        self.lags: list[tuple[float, float]] = []
        #: (start, end, generation) of each collection, time.monotonic().
        self.collections: list[tuple[float, float, int]] = []
        self._collecting_since = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collecting_since = time.monotonic()
        else:
            self.collections.append((self._collecting_since, time.monotonic(), info["generation"]))

    async def run(self) -> None:
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                planned = time.monotonic() + self._every_s
                await asyncio.sleep(self._every_s)
                self.lags.append((planned, max(0.0, time.monotonic() - planned)))
        finally:
            gc.callbacks.remove(self._on_gc)

    def summary(self) -> dict[str, Any]:
        """Loop lag p50 / p99 / max (ms); full (generation 2) collections and the longest
        pause of any collection (ms)."""
        lags = sorted(lag for _, lag in self.lags) or [0.0]
        pauses = [end - start for start, end, _ in self.collections] or [0.0]
        return {
            "loop_lag_ms": (
                1000 * lags[len(lags) // 2],
                1000 * lags[min(len(lags) - 1, len(lags) * 99 // 100)],
                1000 * lags[-1],
            ),
            "full_collections": sum(1 for *_, generation in self.collections if generation == 2),
            "longest_collection_ms": 1000 * max(pauses),
        }


class TimedDispatcher(Dispatcher):
    """The dispatcher, with each batch's claim timed (time.monotonic(), the fake's clock):
    when a claim ran, for `where_places_went`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claims: list[tuple[float, float]] = []

    async def _claim_batch(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return await super()._claim_batch(*args, **kwargs)
        finally:
            self.claims.append((started, time.monotonic()))


def claim_fields(running: Sequence[TimedDispatcher]) -> dict[str, Any]:
    """How many claims the dispatchers made and how long they took (p50 / max, ms)."""
    took = sorted(end - start for dispatcher in running for start, end in dispatcher.claims)
    took = took or [0.0]
    return {
        "claims": sum(len(dispatcher.claims) for dispatcher in running),
        "claim_ms_p50_max": (1000 * took[len(took) // 2], 1000 * took[-1]),
    }


def where_places_went(
    times: list[float],
    claims: list[tuple[float, float]],
    per_second: float,
    watch: ProcessWatch | None = None,
) -> dict[str, float]:
    """The places of the schedule (`per_second`, the rate less the margin) that no message
    took, after the first second, by what the dispatcher did meanwhile.

    Between two arrivals `cost` = 1 / per_second apart none is lost; a longer gap lost
    (gap - cost) x per_second places: counted under "claim" when a batch's claim ran
    during the gap (its start before the gap's end, its end after the gap's start),
    else under "other" (timers woken late, the budget's take, the start gate). Gaps
    are also binned by length: many short ones are jitter, a few long ones stalls;
    with `watch`, the gaps over 100 ms are also counted by whether the dispatchers'
    process was stalled meanwhile (its loop late by over 50 ms) and whether a full
    collection ran in it.
    """
    ordered = sorted(times)
    steady = [at for at in ordered if at >= ordered[0] + 1.0] if ordered else []
    cost = 1.0 / per_second
    lost = {"claim": 0.0, "other": 0.0, "gaps_over_2_cost": 0.0, "gaps_over_100ms": 0.0}
    long_lost = 0.0
    stalled = {"gaps_over_100ms_in_a_stall": 0.0, "gaps_over_100ms_in_a_full_collection": 0.0}
    for earlier, later in itertools.pairwise(steady):
        gap = later - earlier
        if gap <= cost:
            continue
        places = (gap - cost) * per_second
        during_claim = any(start < later and end > earlier for start, end in claims)
        lost["claim" if during_claim else "other"] += places
        if gap > 2 * cost:
            lost["gaps_over_2_cost"] += 1
        if gap > 0.1:
            lost["gaps_over_100ms"] += 1
            long_lost += places
            if watch is not None:
                if any(
                    due < later and due + lag > earlier and lag > 0.05 for due, lag in watch.lags
                ):
                    stalled["gaps_over_100ms_in_a_stall"] += 1
                if any(
                    start < later and end > earlier and generation == 2
                    for start, end, generation in watch.collections
                ):
                    stalled["gaps_over_100ms_in_a_full_collection"] += 1
    span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
    return {
        "places_in_span": span * per_second,
        # Gaps minus the bunches that made up for them: what the steady rate lost.
        "net_lost_places": span * per_second - max(0, len(steady) - 1),
        "lost_places_claim": lost["claim"],
        "lost_places_other": lost["other"],
        "lost_places_in_gaps_over_100ms": long_lost,
        "gaps_over_2_cost": lost["gaps_over_2_cost"],
        "gaps_over_100ms": lost["gaps_over_100ms"],
        **stalled,
    }


def describe_places(result: Mapping[str, Any]) -> str:
    """The fields of `claim_fields`, `where_places_went` and `ProcessWatch.summary` as a
    report line's part."""
    lag = "/".join(f"{ms:.0f}" for ms in result["loop_lag_ms"])
    return (
        f"places retaken: {result['places_retaken']}; of {result['places_in_span']:.0f} places "
        f"in the steady span, {result['net_lost_places']:.1f} not taken (net); gaps lost "
        f"{result['lost_places_claim']:.1f} during a claim "
        f"({result['claims']} claims, p50/max {result['claim_ms_p50_max'][0]:.0f}/"
        f"{result['claim_ms_p50_max'][1]:.0f} ms) and {result['lost_places_other']:.1f} "
        f"otherwise ({result['lost_places_in_gaps_over_100ms']:.1f} in "
        f"{result['gaps_over_100ms']:.0f} gaps over 100 ms, "
        f"{result['gaps_over_100ms_in_a_stall']:.0f} of them while the dispatchers' loop "
        f"was over 50 ms late, {result['gaps_over_100ms_in_a_full_collection']:.0f} in a full "
        f"collection); dispatchers' loop lag p50/p99/max {lag} ms, "
        f"{result['full_collections']} full collection(s), longest collection "
        f"{result['longest_collection_ms']:.0f} ms"
        f"{'' if result['gc_frozen'] else ' (start-up heap NOT frozen)'}"
    )


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
    """The options both dispatcher benches take: round trips, dispatchers, margin, the heap's
    freeze, profile."""
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
        "--no-gc-freeze", dest="gc_freeze", action="store_false",
        help="leave the start-up heap unfrozen (sertakan run freezes it; bot/cli.py)",
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
