"""The daily planning runs: once per run across processes, the big one off the event loop.

`Planning.tick` (every `PLANNER_TICK_S`, and once at start) runs each job that is
due today and not done yet: the dues reminders from `PROGRAM_REMINDER_TIME`, the
PICs' digest on working days from `PROGRAM_DIGEST_TIME`, housekeeping from
03:00. Each run is taken with a lease (`storage.planner_runs`): of several
processes ticking at the same minute one runs it and the others skip; when the
one running it dies, its lease runs out and the next tick of any process
starts it again, skipping what the dead attempt committed (dedupe keys).

The reminder planner runs in a child process of its own (`off_loop`: a spawned
interpreter with its own database connection; SQLite in WAL mode) in pages of
`PLANNER_CHUNK_SIZE` sponsorships, each read in a read-only transaction and
written in a short one (`ReminderPlanner._plan_chunked`). Its Python work
(some 30 s at 1.44 million sponsorships) would otherwise hold the bot's event
loop, and on SQLite the loop's one connection, for the whole run: every chat
froze (issue 14: 2.75 s at 144,000). A thread would still share the GIL with
the loop (every statement a chat runs waits up to the 5 ms switch interval to
get it back). The digest and housekeeping are small and run on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import time as time_module
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from multiprocessing.connection import Connection
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.workdays import WorkCalendar
from scheduler.digest import DigestPlanner
from scheduler.reminders import PlanResult, ReminderPlanner, ReminderSpec
from storage import planner_runs
from storage.db import create_engine
from storage.planner_runs import Lease

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")

JOB_REMINDERS = "dues_reminders"
JOB_DIGEST = "pic_digest"
JOB_HOUSEKEEPING = "housekeeping"
JOBS = (JOB_HOUSEKEEPING, JOB_REMINDERS, JOB_DIGEST)

#: Local time from which the night's housekeeping is due.
HOUSEKEEPING_TIME = time(3, 0)


@dataclasses.dataclass(slots=True, frozen=True)
class OffLoop:
    """Where a child process finds the database (its own engine, own connection)."""

    database_url: str
    sqlite_busy_timeout_ms: int = 5000


class ChildDied(RuntimeError):
    """The planning process ended without an answer (killed, out of memory)."""


class Planning:
    """The planning jobs of one process, each run once per day across processes."""

    def __init__(
        self,
        database: AsyncEngine,
        clock: Clock,
        *,
        timezone: ZoneInfo,
        calendar: WorkCalendar,
        owner: str,
        lease_s: float = 120.0,
        reminders: ReminderPlanner | None = None,
        reminder_time: time = time(6, 0),
        digest: DigestPlanner | None = None,
        digest_time: time = time(8, 0),
        housekeeping: Callable[[], Awaitable[int]] | None = None,
        off_loop: OffLoop | None = None,
    ) -> None:
        """`off_loop`: run the reminder planner in a child process on that database
        (None: on this loop, as tests and an in-memory database need)."""
        self._database = database
        self._clock = clock
        self._timezone = timezone
        self._calendar = calendar
        self.owner = owner
        self._lease_s = lease_s
        self._reminders = reminders
        self._reminder_time = reminder_time
        self._digest = digest
        self._digest_time = digest_time
        self._housekeeping = housekeeping
        self._off_loop = off_loop

    def run_key(self) -> str:
        """Today's run key: the local date."""
        return self._clock().astimezone(self._timezone).date().isoformat()

    def due(self) -> list[str]:
        """The jobs whose time has come today (done or not)."""
        local = self._clock().astimezone(self._timezone)
        jobs: list[str] = []
        if self._housekeeping is not None and local.time() >= HOUSEKEEPING_TIME:
            jobs.append(JOB_HOUSEKEEPING)
        if self._reminders is not None and local.time() >= self._reminder_time:
            jobs.append(JOB_REMINDERS)
        if (
            self._digest is not None
            and self._calendar.is_working_day(local.date())
            and local.time() >= self._digest_time
        ):
            jobs.append(JOB_DIGEST)
        return jobs

    async def tick(self) -> dict[str, int | None]:
        """Run each due job not done today; per job the rows it wrote, None when skipped
        (done already, or running in another process)."""
        outcome: dict[str, int | None] = {}
        for job in self.due():
            try:
                outcome[job] = await self.run(job)
            except Exception:
                # One job's failure (recorded on its attempt) leaves the others their turn;
                # the next tick tries it again.
                log.exception("planning: %s failed", job)
                outcome[job] = None
        return outcome

    async def run(self, job: str, *, again: bool = False) -> int | None:
        """Run `job` for today under its lease; None when it is held or done (`again`:
        run a done one again, as `sertakan plan run` does)."""
        lease = await planner_runs.acquire(
            self._database,
            job=job,
            run_key=self.run_key(),
            owner=self.owner,
            now=self._clock(),
            lease_s=self._lease_s,
            again=again,
        )
        if lease is None:
            log.debug("%s %s: done already or running elsewhere", job, self.run_key())
            return None
        if job == JOB_REMINDERS:
            return (await self.run_reminders(lease)).notices
        work = self._job(job)
        try:
            rows = await work()
        except Exception as exc:
            await planner_runs.finish(self._database, lease, now=self._clock(), error=_why(exc))
            raise
        await planner_runs.finish(self._database, lease, now=self._clock(), rows=rows)
        return rows

    def _job(self, job: str) -> Callable[[], Awaitable[int]]:
        if job == JOB_DIGEST and self._digest is not None:
            return self._digest.plan
        if job == JOB_HOUSEKEEPING and self._housekeeping is not None:
            return self._housekeeping
        raise ValueError(f"no planner for {job!r} in this process")

    async def run_reminders(self, lease: Lease) -> PlanResult:
        """The reminder run of `lease`: in a child process (`off_loop`) or on this loop."""
        planner = self._reminders
        if planner is None:
            raise ValueError("no reminder planner in this process")
        if self._off_loop is None:
            return await leased_reminders(self._database, planner, lease, self._clock)
        values = await run_in_child(
            _reminders_in_child, self._off_loop, planner.spec, lease, self._clock()
        )
        result = PlanResult(**values)
        quiet = result == PlanResult()
        log.log(logging.DEBUG if quiet else logging.INFO, "reminders (off the loop): %s", result)
        return result


async def leased_reminders(
    database: AsyncEngine, planner: ReminderPlanner, lease: Lease, clock: Clock
) -> PlanResult:
    """`planner.plan()` renewing `lease` in each page's transaction, its end recorded.

    A failure is recorded as such and raised; a cancellation (or a killed
    process) records nothing: the lease runs out and another attempt follows.
    """

    async def renew(connection: AsyncConnection, pages: int, result: PlanResult) -> None:
        await planner_runs.renew(connection, lease, now=clock(), chunks=pages, rows=result.notices)

    try:
        result = await planner.plan(on_chunk=renew)
    except Exception as exc:
        await planner_runs.finish(database, lease, now=clock(), error=_why(exc))
        raise
    await planner_runs.finish(database, lease, now=clock(), rows=result.notices)
    return result


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _reminders_in_child(
    where: OffLoop, spec: ReminderSpec, lease: Lease, now: datetime
) -> dict[str, int]:
    """The child process's work: its own engine, the planner from `spec`, the leased run.

    The planning day is the parent's `now`; the lease's times go on from it by
    the child's own clock.
    """
    started = time_module.monotonic()

    def clock() -> datetime:
        return now + timedelta(seconds=time_module.monotonic() - started)

    async def main() -> PlanResult:
        database = create_engine(where.database_url, busy_timeout_ms=where.sqlite_busy_timeout_ms)
        try:
            return await leased_reminders(database, spec.planner(database, clock), lease, clock)
        finally:
            await database.dispose()

    return dataclasses.asdict(asyncio.run(main()))


def _child_main(answer: Connection, work: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run `work(*args)` and send (True, value) or (False, "Type: message") back."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[child]: %(message)s"
    )
    try:
        value = work(*args)
    except BaseException as exc:  # anything: the parent must hear of it
        answer.send((False, _why(exc)))
    else:
        answer.send((True, value))
    finally:
        answer.close()


async def run_in_child(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a fresh spawned process, awaited without blocking this loop.

    Spawned, not forked: a fork would copy this process's event loop, open
    connections and threads. The child is a daemon (it ends with this process
    on a normal exit); cancelling the await terminates it (its open page rolls
    back). Raises `ChildDied` when it ends without an answer, RuntimeError with
    its error when `work` failed.
    """
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main, args=(sending, work, args), name="sertakan-planner", daemon=True
    )
    process.start()
    sending.close()
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(receiving.fileno(), readable.set)
    try:
        await readable.wait()
        try:
            ok, value = receiving.recv()
        except EOFError as exc:
            raise ChildDied(f"the planning process ended (exit code {process.exitcode})") from exc
    except BaseException:
        if process.is_alive():
            process.terminate()
        raise
    finally:
        loop.remove_reader(receiving.fileno())
        receiving.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(process.join, 10)
    if not ok:
        raise RuntimeError(f"planning process: {value}")
    return value  # type: ignore[no-any-return]
