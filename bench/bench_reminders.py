"""Benchmark: planning a day's dues reminders for 144,000 sponsorships.

A fresh database (SQLite in a temporary file, or the PostgreSQL database given
with --database-url, whose public schema is dropped first) is seeded with N
sponsorships of 50 OPDs (each with a PIC), three per ASN, plans mixed (60%
monthly, 25% quarterly, 15% payroll deduction) and arrears mixed as of the
planning day, Wednesday 11 November 2026, 09:00 WIB (November's dues are due
Monday the 16th, so this is a "5 days before" day): 50% paid through October
(a 5-day reminder), 20% paid ahead, 14% one month in arrears (overdue), 8% two
(escalation), 6% three or more (lapse, ASN and PIC told), 2% not dues-bearing.
Payments are one row per month (quarterly: per quarter), as the chat records
them, so the payment table holds about six rows per sponsorship.

    python -m bench.bench_reminders [--sponsorships 144000] [--repeat 3]
                                    [--database-url postgresql+asyncpg://...] [--reuse]
    python -m bench.bench_reminders --province 10 [--sqlite-seed FILE]

`--sqlite-seed FILE` (SQLite, `--province`): the province is seeded into FILE
once and every run measures a fresh copy of it (the 4-minute seeding of 1.44
million sponsorships paid once).

Measured, `--repeat` times each (median reported): the first run (every
reminder new) and an idempotent re-run the same day (adds nothing). Every
first run starts from the seeded state: before each repeat the outbox and the
audit log are emptied and lapsed sponsorships get their seeded status back
(`reset`), and on PostgreSQL every table is VACUUM ANALYZEd and a CHECKPOINT
taken after seeding and after each reset (`settle`), so no repeat inherits the
dead rows of the one before or meets a checkpoint halfway. `--reuse`
(PostgreSQL) skips dropping and seeding when the database already holds
exactly this seed (counts and statuses checked) and resets it instead: the
same starting state, without the 90 s of seeding. Baseline, measured in the
same run: a bare `SELECT` of the same dues-bearing sponsorship rows (id, plan,
first month, funding); ratios are run / baseline. Targets (issue 4): first run
at most 3 s, re-run at most 1 s, on SQLite and on PostgreSQL. The machine's
load average is printed with the figures: on a shared machine they are only
comparable when it is near zero.

Exit code 0 for any measurement (MISS is a result, not an error); 1 when the
run itself was broken (a second run planned something, counts not as seeded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import String, case, cast, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.province import (
    JAKARTA,
    NOW,
    PER_ASN,
    Province,
    dues_payments,
    dues_sponsorships,
    empty_database,
    replicate,
    seed_province,
)
from domain.eligibility import AgeBounds
from domain.tariff import DEFAULT_TARIFF
from domain.vocabulary import (
    Channel,
    Language,
    SponsorshipStatus,
)
from domain.workdays import WorkCalendar
from handlers.context import EngineConfig
from handlers.engine import Engine
from handlers.i18n import Catalogs
from handlers.types import EventKind, InboundEvent
from scheduler.planning import OffLoop, _reminders_in_child, run_in_child
from scheduler.reminders import DEFAULT_CHUNK_SIZE, PlanResult, ReminderPlanner, ReminderSpec
from storage import planner_runs
from storage.crypto import NikCipher
from storage.db import create_engine, is_sqlite
from storage.migrate import upgrade_to_head
from storage.models import (
    Asn,
    AuditLog,
    Opd,
    Outbox,
    Payment,
    Pic,
    PlannerRun,
    Sponsorship,
    Worker,
)

TARGET_FIRST_S = 3.0
TARGET_RERUN_S = 1.0
TODAY = date(2026, 11, 11)
OPDS = 50


async def seed(engine: AsyncEngine, sponsorships: int) -> dict[str, int]:
    """The OPDs, PICs, ASN, workers, sponsorships and payments; returns what was written."""
    return await seed_province(engine, province(sponsorships))


def province(sponsorships: int) -> Province:
    """This bench's province: the dues mix in 50 OPDs, one PIC each, every tenth account
    English."""
    return Province(
        dues_sponsorships(sponsorships, opds=OPDS),
        dues_payments(sponsorships),
        opds=[(f"OPD-{opd}", f"Dinas {opd}") for opd in range(1, OPDS + 1)],
        pic_opds=range(1, OPDS + 1),
        language=lambda account: Language.INDONESIAN if account % 10 else Language.ENGLISH,
    )


async def reset(engine: AsyncEngine) -> None:
    """Undo a run: the state right after seeding (see `settle`).

    No outbox rows, no audit entries (ids restart), and every lapsed
    sponsorship back to the status it was seeded with.
    """
    async with engine.begin() as connection:
        if is_sqlite(str(engine.url)):
            await connection.execute(delete(Outbox))
            await connection.execute(delete(AuditLog))
        else:
            await connection.exec_driver_sql("TRUNCATE outbox, audit_log RESTART IDENTITY")
        await connection.execute(
            update(Sponsorship)
            .where(Sponsorship.status == SponsorshipStatus.LAPSED)
            .values(
                status=case(
                    ((Sponsorship.id - 1) % 3 == 0, SponsorshipStatus.CARD_HANDED_OVER.value),
                    else_=SponsorshipStatus.ACTIVE.value,
                ),
                status_changed_at=NOW,
            )
        )
    await settle(engine)


async def settle(engine: AsyncEngine) -> None:
    """PostgreSQL: VACUUM ANALYZE and CHECKPOINT, so every measured run starts alike.

    After seeding and after each reset: no dead rows left by the previous
    run's lapses or its reset, statistics current (as autovacuum keeps a
    database that is not being bulk-loaded), and a checkpoint just done, so
    none starts during the measured runs (checkpoint_timeout is minutes away,
    a run writes far less WAL than max_wal_size) and every run pays the same
    full-page images for the pages it is the first to change. SQLite: nothing.
    """
    if is_sqlite(str(engine.url)):
        return
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM ANALYZE")
        await autocommit.exec_driver_sql("CHECKPOINT")


async def already_seeded(engine: AsyncEngine, sponsorships: int) -> bool:
    """Whether the database holds exactly this bench's seed (plus a run's writes, if any)."""
    rows = dues_sponsorships(sponsorships, opds=OPDS)
    payments = list(dues_payments(sponsorships))
    expected = {
        "opd": OPDS,
        "pic": OPDS,
        "asn": (sponsorships + PER_ASN - 1) // PER_ASN,
        "worker": sponsorships,
        "sponsorship": len(rows),
        "payment": len(payments),
        "payment_months": sum(payment["months"] for payment in payments),
        "seeded_status": len(rows),
    }
    statuses = case(
        (
            Sponsorship.status == SponsorshipStatus.LAPSED,
            case(
                ((Sponsorship.id - 1) % 3 == 0, SponsorshipStatus.CARD_HANDED_OVER.value),
                else_=SponsorshipStatus.ACTIVE.value,
            ),
        ),
        else_=cast(Sponsorship.status, String),
    )
    seeded_status = {row["id"]: row["status"].value for row in rows}
    try:
        async with engine.connect() as connection:
            found = {
                "opd": await connection.scalar(select(func.count()).select_from(Opd)),
                "pic": await connection.scalar(select(func.count()).select_from(Pic)),
                "asn": await connection.scalar(select(func.count()).select_from(Asn)),
                "worker": await connection.scalar(select(func.count()).select_from(Worker)),
                "sponsorship": await connection.scalar(
                    select(func.count()).select_from(Sponsorship)
                ),
                "payment": await connection.scalar(select(func.count()).select_from(Payment)),
                "payment_months": await connection.scalar(select(func.sum(Payment.months))),
                "seeded_status": sum(
                    seeded_status.get(sponsorship_id) == status
                    for sponsorship_id, status in (
                        await connection.execute(select(Sponsorship.id, statuses))
                    ).tuples()
                ),
            }
    except DBAPIError:
        return False
    return found == expected


async def baseline(engine: AsyncEngine) -> float:
    started = time.perf_counter()
    async with engine.connect() as connection:
        result = await connection.execute(
            select(
                Sponsorship.id,
                Sponsorship.plan,
                Sponsorship.first_month,
                Sponsorship.funding_source,
            ).where(
                Sponsorship.status.in_(
                    [SponsorshipStatus.ACTIVE, SponsorshipStatus.CARD_HANDED_OVER]
                )
            )
        )
        result.all()
    return time.perf_counter() - started


#: This process's CPU seconds (user + system) of each `timed` run, in order: on a loaded
#: machine the wall time is mostly waiting for a core.
cpu_seconds: list[float] = []


async def timed(planner: ReminderPlanner) -> tuple[float, PlanResult]:
    started, cpu = time.perf_counter(), time.process_time()
    result = await planner.plan()
    cpu_seconds.append(time.process_time() - cpu)
    return time.perf_counter() - started, result


async def measure(
    url: str,
    sponsorships: int,
    repeat: int,
    *,
    reuse: bool = False,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    pages_in_flight: int = 1,
) -> int:
    if reuse:
        await upgrade_to_head(url)
    else:
        await empty_database(url)
    engine = create_engine(url)
    backend = "sqlite" if is_sqlite(url) else "postgresql"
    try:
        started = time.perf_counter()
        if reuse and await already_seeded(engine, sponsorships):
            await reset(engine)
            print(
                f"[{backend}] reused the seeded database, reset in "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
        else:
            if reuse:
                await engine.dispose()
                return await measure(
                    url,
                    sponsorships,
                    repeat,
                    chunk_size=chunk_size,
                    pages_in_flight=pages_in_flight,
                )
            seeded = await seed(engine, sponsorships)
            await settle(engine)
            print(
                f"[{backend}] seeded {seeded['sponsorships']:,} sponsorships, "
                f"{seeded['payments']:,} payments in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        async with engine.connect() as connection:
            seeded = {
                "sponsorships": int(
                    await connection.scalar(select(func.count()).select_from(Sponsorship)) or 0
                ),
                "payments": int(
                    await connection.scalar(select(func.count()).select_from(Payment)) or 0
                ),
            }
        planner = ReminderPlanner(
            engine,
            Catalogs(),
            lambda: NOW,
            timezone=JAKARTA,
            calendar=WorkCalendar([]),
            tariff=DEFAULT_TARIFF,
            chunk_size=chunk_size,
            pages_in_flight=pages_in_flight,
        )
        print(
            f"[{backend}] pages of {chunk_size or 'all'} sponsorships, {pages_in_flight} at once",
            flush=True,
        )
        load_before = os.getloadavg()
        firsts: list[float] = []
        reruns: list[float] = []
        bases: list[float] = []
        broken = False
        first_result = PlanResult()
        for attempt in range(repeat):
            if attempt:
                await reset(engine)
            bases.append(await baseline(engine))
            seconds, first_result = await timed(planner)
            firsts.append(seconds)
            seconds, again = await timed(planner)
            reruns.append(seconds)
            if again.notices or again.lapsed:
                print(f"BROKEN: the re-run planned {again}")
                broken = True
            bases.append(await baseline(engine))
        async with engine.connect() as connection:
            outbox_rows = int(
                await connection.scalar(select(func.count()).select_from(Outbox)) or 0
            )
        if outbox_rows != first_result.notices:
            print(f"BROKEN: {outbox_rows} outbox rows, the run reported {first_result.notices}")
            broken = True
        first, rerun, base = (statistics.median(x) for x in (firsts, reruns, bases))
        verdict_first = "met" if first <= TARGET_FIRST_S else "MISS"
        verdict_rerun = "met" if rerun <= TARGET_RERUN_S else "MISS"
        print(f"[{backend}] first run: {dataclasses_repr(first_result)}")
        print(
            f"[{backend}] first run  {first:.3f} s (target {TARGET_FIRST_S} s: {verdict_first}), "
            f"{first / base:.1f}x the bare SELECT"
        )
        print(
            f"[{backend}] re-run     {rerun:.3f} s (target {TARGET_RERUN_S} s: {verdict_rerun}), "
            f"{rerun / base:.1f}x the bare SELECT"
        )
        print(f"[{backend}] bare SELECT of the dues-bearing rows {base:.3f} s")
        load_after = os.getloadavg()
        print(
            f"[{backend}] load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
            f"(1 min; {os.cpu_count()} CPUs)"
        )
        print(
            json.dumps(
                {
                    "bench": "reminders",
                    "backend": backend,
                    "sponsorships": seeded["sponsorships"],
                    "payments": seeded["payments"],
                    "repeat": repeat,
                    "pages_in_flight": pages_in_flight,
                    "first_s": round(first, 4),
                    "rerun_s": round(rerun, 4),
                    "baseline_select_s": round(base, 4),
                    "first_ratio": round(first / base, 2),
                    "rerun_ratio": round(rerun / base, 2),
                    "first_cpu_s": round(statistics.median(cpu_seconds[-2 * repeat :: 2]), 4),
                    "rerun_cpu_s": round(statistics.median(cpu_seconds[-2 * repeat + 1 :: 2]), 4),
                    "first_all_s": [round(x, 4) for x in firsts],
                    "rerun_all_s": [round(x, 4) for x in reruns],
                    "notices": first_result.notices,
                    "lapsed": first_result.lapsed,
                    "load_1min_before": round(load_before[0], 2),
                    "load_1min_after": round(load_after[0], 2),
                    "utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                }
            )
        )
        return 1 if broken else 0
    finally:
        await engine.dispose()


def _measured_child(
    where: OffLoop, spec: ReminderSpec, lease: planner_runs.Lease, now: datetime
) -> tuple[float, dict[str, int], int, int]:
    """The off-loop run as the bot's child process does it, with its time and memory:
    (seconds, result, max RSS in kB before the run (imports done), max RSS after)."""
    rss_before = _peak_rss_kb()
    started, cpu = time.perf_counter(), time.process_time()
    values = _reminders_in_child(where, spec, lease, now)
    seconds = time.perf_counter() - started
    # The child's own CPU time (user + system): on a loaded machine the wall time is
    # mostly waiting for a core.
    values["cpu_ms"] = round((time.process_time() - cpu) * 1000)
    return seconds, values, rss_before, _peak_rss_kb()


class ServerCpu:
    """CPU time (user + system) of the PostgreSQL backends of one database that were not
    there when it started: the planner child's, on a server on this machine (Linux
    /proc; read as root or as the server's user). Sampled every 0.1 s in a thread, so a
    backend that exits is counted up to its last sample."""

    def __init__(self, database: str) -> None:
        self._marker = f" {database} ".encode()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._before = set(self._backends())
        self._seen: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _backends(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                    title = cmdline.read()
                if not title.startswith(b"postgres: ") or self._marker not in title:
                    continue
                with open(f"/proc/{name}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            found[int(name)] = int(fields[11]) + int(fields[12])
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pid, ticks in self._backends().items():
                if pid not in self._before:
                    self._seen[pid] = ticks

    def stop(self) -> float:
        """Seconds of CPU of the new backends."""
        self._stop.set()
        self._thread.join()
        for pid, ticks in self._backends().items():
            if pid not in self._before:
                self._seen[pid] = ticks
        return sum(self._seen.values()) / self._tick


def _peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM), in kB. Not `ru_maxrss`: a spawned child
    inherits its parent's (fork, then exec), which hid the child's own peak (measured:
    580 MB "before" in a child whose parent had seeded the database)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kb() -> int:
    """This process's resident set now, in kB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def chat_engine(engine: AsyncEngine) -> Engine:
    """The bot's conversation engine on `engine` (the same connection the bot would use)."""
    return Engine(
        database=engine,
        cipher=NikCipher(bytes(range(32))),
        config=EngineConfig(
            age_bounds=AgeBounds(15, 65),
            max_workers_per_asn=5,
            draft_idle=timedelta(minutes=30),
            timezone=JAKARTA,
            default_language=Language.INDONESIAN,
            tariff=DEFAULT_TARIFF,
        ),
        catalogs=Catalogs(),
        clock=lambda: NOW,
    )


_updates = itertools.count(1)


async def chat_steps(bot: Engine, done: Callable[[float], bool]) -> list[float]:
    """Engine steps one after another ("bantuan" from 50 people in turn) until `done(elapsed)`;
    each step's seconds."""
    latencies: list[float] = []
    started = time.perf_counter()
    while not done(time.perf_counter() - started):
        update = next(_updates)
        event = InboundEvent(
            channel=Channel.TELEGRAM,
            sender_id=str(900_000 + update % 50),
            # The process in the id: a `--reuse` run's database remembers the ids it handled.
            update_id=f"bench-{os.getpid()}-{update}",
            kind=EventKind.TEXT,
            received_at=NOW,
            text="bantuan",
        )
        step = time.perf_counter()
        replies = await bot.handle(event)
        latencies.append(time.perf_counter() - step)
        if not replies:
            raise RuntimeError("an engine step answered nothing")
        # A bot waits for the next update between steps (here: SQLite's in-loop steps
        # never suspend, and the planner's task would never start).
        await asyncio.sleep(0)
    return latencies


def _until_done(task: asyncio.Future[Any]) -> Callable[[float], bool]:
    return lambda _elapsed: task.done()


def _p(latencies: list[float], quantile: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


async def measure_province(
    url: str,
    sponsorships: int,
    copies: int,
    chunk_size: int,
    chat_s: float,
    reuse: bool = False,
    pages_in_flight: int = 1,
) -> int:
    """The off-loop planner over `sponsorships * copies`, with chats served meanwhile.

    Seeds `sponsorships` and copies them (`replicate`); then measures, in one
    run: engine steps for `chat_s` seconds alone (the baseline), the off-loop
    reminder run (a spawned child with its own connection, pages of
    `chunk_size`) with engine steps served during it on this process's loop
    and connection, and the idempotent re-run. Reported: the run's wall time,
    the child's RSS growth (max RSS after the run minus before it, imports
    done), this process's RSS change, and the steps' p50/p99 with and without
    the planner.
    """
    reused = reuse and await _province_seeded(url, sponsorships * copies)
    if reused:
        engine = create_engine(url)
        started = time.perf_counter()
        async with engine.begin() as connection:
            await connection.execute(delete(PlannerRun))
        await reset(engine)
    else:
        await empty_database(url)
        engine = create_engine(url)
        started = time.perf_counter()
        await seed(engine, sponsorships)
        await replicate(engine, province(sponsorships), copies)
        await settle(engine)
    backend = "sqlite" if is_sqlite(url) else "postgresql"
    broken = False
    try:
        async with engine.connect() as connection:
            total = int(await connection.scalar(select(func.count()).select_from(Sponsorship)) or 0)
            payments = int(await connection.scalar(select(func.count()).select_from(Payment)) or 0)
        print(
            f"[{backend}] {'reset' if reused else 'seeded'} {total:,} sponsorships, "
            f"{payments:,} payments in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        spec = ReminderPlanner(
            engine,
            Catalogs(),
            lambda: NOW,
            timezone=JAKARTA,
            calendar=WorkCalendar([]),
            tariff=DEFAULT_TARIFF,
            chunk_size=chunk_size,
            pages_in_flight=pages_in_flight,
        ).spec
        bot = chat_engine(engine)
        await chat_steps(bot, lambda elapsed: elapsed >= 1.0)  # warm-up (accounts, caches)
        alone = await chat_steps(bot, lambda elapsed: elapsed >= chat_s)
        load_before = os.getloadavg()
        figures: dict[str, tuple[float, dict[str, int], int, int]] = {}
        during: list[float] = []
        parent_rss: tuple[int, int] = (0, 0)
        server_cpu: dict[str, float] = {}
        for attempt in ("first", "rerun"):
            lease = await planner_runs.acquire(
                engine,
                job="bench_reminders",
                run_key=attempt,
                owner="bench",
                now=NOW,
                lease_s=3600,
            )
            assert lease is not None
            rss_before = _rss_kb()
            server = None if backend == "sqlite" else ServerCpu(engine.url.database or "")
            child = asyncio.ensure_future(
                run_in_child(_measured_child, OffLoop(url), spec, lease, NOW)
            )
            steps = await chat_steps(bot, _until_done(child))
            figures[attempt] = await child
            server_cpu[attempt] = server.stop() if server is not None else 0.0
            if attempt == "first":
                during = steps
                parent_rss = (rss_before, _rss_kb())
        first_s, first, rss_start, rss_peak = figures["first"]
        rerun_s, rerun, _, _ = figures["rerun"]
        first_cpu_s, rerun_cpu_s = first.pop("cpu_ms") / 1000, rerun.pop("cpu_ms") / 1000
        if sum(rerun.values()):
            print(f"BROKEN: the re-run planned {rerun}")
            broken = True
        growth_mb = (rss_peak - rss_start) / 1024
        p99_alone, p99_during = _p(alone, 0.99), _p(during, 0.99)
        print(f"[{backend}] first run: {first}")
        print(
            f"[{backend}] off-loop first run {first_s:.2f} s (target 30 s: "
            f"{'met' if first_s <= 30 else 'MISS'}), child RSS growth {growth_mb:.0f} MB "
            f"(target 200 MB: {'met' if growth_mb <= 200 else 'MISS'}), re-run {rerun_s:.2f} s; "
            f"the child's CPU time {first_cpu_s:.1f} s first run, {rerun_cpu_s:.1f} s re-run; "
            f"its server backends' CPU time {server_cpu['first']:.1f} s first run, "
            f"{server_cpu['rerun']:.1f} s re-run; "
            f"this process's RSS {parent_rss[0] / 1024:.0f} -> {parent_rss[1] / 1024:.0f} MB"
        )
        print(
            f"[{backend}] engine steps alone: {len(alone) / chat_s:.0f}/s, p50 "
            f"{_p(alone, 0.5) * 1000:.1f} ms, p99 {p99_alone * 1000:.1f} ms; during the run: "
            f"{len(during) / first_s:.0f}/s, p50 {_p(during, 0.5) * 1000:.1f} ms, p99 "
            f"{p99_during * 1000:.1f} ms = {p99_during / p99_alone:.2f}x (target 2x: "
            f"{'met' if p99_during <= 2 * p99_alone else 'MISS'})"
        )
        load_after = os.getloadavg()
        print(
            json.dumps(
                {
                    "bench": "reminders_province",
                    "backend": backend,
                    "sponsorships": total,
                    "payments": payments,
                    "chunk_size": chunk_size,
                    "pages_in_flight": pages_in_flight,
                    "first_s": round(first_s, 3),
                    "rerun_s": round(rerun_s, 3),
                    "child_cpu_first_s": round(first_cpu_s, 1),
                    "child_cpu_rerun_s": round(rerun_cpu_s, 1),
                    "server_cpu_first_s": round(server_cpu["first"], 1),
                    "server_cpu_rerun_s": round(server_cpu["rerun"], 1),
                    "child_rss_growth_mb": round(growth_mb, 1),
                    "child_rss_before_mb": round(rss_start / 1024, 1),
                    "parent_rss_mb": [round(x / 1024, 1) for x in parent_rss],
                    "steps_alone": len(alone),
                    "steps_during": len(during),
                    "p99_alone_ms": round(p99_alone * 1000, 2),
                    "p99_during_ms": round(p99_during * 1000, 2),
                    "p50_alone_ms": round(_p(alone, 0.5) * 1000, 2),
                    "p50_during_ms": round(_p(during, 0.5) * 1000, 2),
                    "notices": sum(first.values()) - first["lapsed"],
                    "load_1min_before": round(load_before[0], 2),
                    "load_1min_after": round(load_after[0], 2),
                    "utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
                }
            ),
            flush=True,
        )
        return 1 if broken else 0
    finally:
        await engine.dispose()


async def _province_seeded(url: str, sponsorships: int) -> bool:
    """Whether `url` holds a seeded province of `sponsorships` (`--reuse`: reset, not seeded)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(Sponsorship))
    except DBAPIError:
        return False
    finally:
        await engine.dispose()
    return count == sponsorships


async def seed_sqlite_file(path: Path, sponsorships: int, copies: int) -> None:
    """`--sqlite-seed`: seed the province into the SQLite file `path` once (`copies` of
    `sponsorships`), its WAL checkpointed into the file so that a copy of the file alone
    holds it all."""
    url = f"sqlite+aiosqlite:///{path}"
    started = time.perf_counter()
    await empty_database(url)
    engine = create_engine(url)
    try:
        await seed(engine, sponsorships)
        await replicate(engine, province(sponsorships), copies)
    finally:
        await engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"[sqlite] seeded {path} in {time.perf_counter() - started:.1f} s", flush=True)


def sqlite_copy(seeded: Path, directory: str) -> str:
    """A fresh copy of the seeded SQLite file `seeded` in `directory`; its URL."""
    target = Path(directory) / "bench.sqlite3"
    shutil.copyfile(seeded, target)
    target.chmod(0o600)
    return f"sqlite+aiosqlite:///{target}"


def dataclasses_repr(result: PlanResult) -> str:
    return (
        f"before5={result.before5} before1={result.before1} overdue={result.overdue} "
        f"escalation={result.escalation} payroll={result.payroll} lapsed={result.lapsed} "
        f"lapse_notices={result.lapse_notices}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sponsorships", type=int, default=144_000)
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each (default 3)")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (its public schema is dropped first); default: a temporary SQLite",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"sponsorships per page (default {DEFAULT_CHUNK_SIZE}; 0: one transaction)",
    )
    parser.add_argument(
        "--province",
        type=int,
        metavar="COPIES",
        help=(
            "the province case: seed --sponsorships, copy it COPIES times in SQL (10: 1.44 "
            "million), and measure the off-loop planner with engine steps served meanwhile"
        ),
    )
    parser.add_argument(
        "--chat-seconds", type=float, default=10.0, help="engine steps alone, the baseline"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help=(
            "PostgreSQL: keep the database if it holds exactly this seed (reset to the seeded "
            "state instead of dropped and seeded again); otherwise seed as usual"
        ),
    )
    parser.add_argument(
        "--sqlite-seed",
        type=Path,
        metavar="FILE",
        help=(
            "SQLite, --province: keep the seeded province in FILE (seeded there when missing) "
            "and run each measurement on a fresh copy of it (no 4-minute seeding per run)"
        ),
    )
    parser.add_argument(
        "--pages-in-flight",
        type=int,
        default=1,
        help="PostgreSQL: pages planned at once, on connections of their own (default 1)",
    )
    args = parser.parse_args(argv)
    if args.province and args.sqlite_seed and not args.database_url:
        if not args.sqlite_seed.exists():
            asyncio.run(seed_sqlite_file(args.sqlite_seed, args.sponsorships, args.province))
        with tempfile.TemporaryDirectory() as directory:
            url = sqlite_copy(args.sqlite_seed, directory)
            return asyncio.run(
                measure_province(
                    url,
                    args.sponsorships,
                    args.province,
                    args.chunk_size,
                    args.chat_seconds,
                    reuse=True,
                )
            )
    if args.province:
        if args.database_url:
            return asyncio.run(
                measure_province(
                    args.database_url,
                    args.sponsorships,
                    args.province,
                    args.chunk_size,
                    args.chat_seconds,
                    reuse=args.reuse,
                    pages_in_flight=args.pages_in_flight,
                )
            )
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.sqlite3'}"
            return asyncio.run(
                measure_province(
                    url, args.sponsorships, args.province, args.chunk_size, args.chat_seconds
                )
            )
    chunk_size = args.chunk_size or None
    if args.database_url:
        return asyncio.run(
            measure(
                args.database_url,
                args.sponsorships,
                args.repeat,
                reuse=args.reuse,
                chunk_size=chunk_size,
                pages_in_flight=args.pages_in_flight,
            )
        )
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.sqlite3'}"
        return asyncio.run(measure(url, args.sponsorships, args.repeat, chunk_size=chunk_size))


if __name__ == "__main__":
    sys.exit(main())
