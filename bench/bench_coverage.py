"""Benchmark: the coverage page's server time for a province of 144,000 sponsorships.

A fresh database (SQLite in a temporary file, or the PostgreSQL database given
with --database-url, whose public schema is dropped first) is seeded with N
sponsorships in the 45 OPDs of the shipped Bengkulu list, three per sponsoring
ASN plus 30,000 ASN who sponsor nobody (tens of thousands of ASN, SPEC 8), the
workers spread over 1,447 villages in 120 districts and 10 regencies. The
sponsorships and their payments are `bench_reminders`' (plans mixed, arrears
mixed as of Wednesday 11 November 2026, about six payment rows each), with the
status changed for a share of them: 4% waiting for the PIC, 1% returned, 2%
accepted, 2% submitted, 6% lapsed, 3% ended; enrollments spread over the 52
weeks before, cards imported two weeks after enrollment, lapses over the last
120 days.

    python -m bench.bench_coverage [--sponsorships 144000] [--runs 20]
                                   [--database-url postgresql+asyncpg://...]

After seeding, the derived paid-until of every sponsorship is settled
(`storage.paid_until`, what migration 0014's backfill runs; the seed writes
payment rows directly) and its time printed. Measured `--runs` times,
interleaved: the province page read afresh (`dashboard` for all OPDs, its
three SVG charts and the CSV download), the same page served by
`CoverageCache` (figures at most a minute old: what the web page does), the
page of one OPD read afresh, the XLSX download of the province (from a
dashboard already built), and the baseline, a plain `SELECT count(*) FROM
sponsorship` over the same rows. p50 and p95 of each (p95: nearest rank), and
p95s against the baseline's. Goal (issue 13): the province page p95 <= 300 ms,
on SQLite and on PostgreSQL. `--breakdown` also times the dashboard's parts
once each after the runs (ASN, workers, paid-until, weeks, villages from
`coverage_area`, and the join they replace, `villages_afresh`); the villages
of the last page must equal that join (else exit code 1). The
machine's load average is printed: figures are comparable only when it is near
zero.

Exit code 0 for any measurement (a MISS is a result); 1 when the dashboard did
not count what was seeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.bench_reminders import settle
from bench.province import (
    Province,
    dues_payments,
    dues_sponsorships,
    empty_database,
    seed_province,
)
from bot.web.charts import Series, bar_chart, histogram, progress_bar
from domain.dues import PaidStanding
from domain.vocabulary import SponsorshipStatus
from domain.workdays import WorkCalendar
from sertakan_data import COVERAGE_TARGETS, OPD_SEED, shipped
from storage import coverage as coverage_module
from storage.coverage import CoverageDashboard, dashboard, load_targets
from storage.coverage_cache import CoverageCache
from storage.coverage_export import coverage_csv, coverage_xlsx
from storage.db import create_engine, is_sqlite
from storage.models import Payment
from storage.paid_until import settle_paid_until

TARGET_P95_S = 0.300
JAKARTA = ZoneInfo("Asia/Jakarta")
TODAY = date(2026, 11, 11)
NOW = datetime(2026, 11, 11, 9, 0, tzinfo=JAKARTA).astimezone(UTC)
IDLE_ASN = 30_000
VILLAGES = 1_447
VILLAGES_PER_DISTRICT = 12
REGENCIES = 10
CALENDAR = WorkCalendar([])
S = SponsorshipStatus

#: (share in percent, status): the rest keep the reminder seed's status.
STATUS_MIX = (
    (4, S.WAITING_FOR_PIC),
    (1, S.RETURNED),
    (2, S.ACCEPTED),
    (2, S.SUBMITTED),
    (6, S.LAPSED),
    (3, S.ENDED),
)


def _opds() -> list[tuple[str, str]]:
    lines = shipped(OPD_SEED).read_text(encoding="utf-8").splitlines()[1:]
    return [(line.split(",", 1)[0], line.split(",", 1)[1]) for line in lines if line]


def _status_of(index: int, seeded: SponsorshipStatus) -> SponsorshipStatus:
    slot = (index * 31) % 100
    for share, status in STATUS_MIX:
        if slot < share:
            return status
        slot -= share
    return seeded


async def seed(engine: AsyncEngine, sponsorships: int) -> dict[str, int]:
    """OPDs, ASN, workers, sponsorships and payments (see the module docstring)."""
    opds = _opds()
    rows = dues_sponsorships(sponsorships, opds=len(opds))
    for index, row in enumerate(rows):
        status = _status_of(index, row["status"])
        created = NOW - timedelta(days=index % 364, hours=index % 24)
        card = created + timedelta(days=14)
        row["status"] = status
        row["created_at"] = created
        row["status_changed_at"] = created
        row["kpj"] = row["kpj_imported_at"] = None
        if status in (S.ACTIVE, S.CARD_HANDED_OVER, S.LAPSED, S.ENDED) and card < NOW:
            row["kpj"] = f"{index:011d}"
            row["kpj_imported_at"] = card
            row["status_changed_at"] = card
        if status in (S.LAPSED, S.ENDED):
            row["status_changed_at"] = NOW - timedelta(days=index % 120, hours=3)

    def worker(worker: int) -> dict[str, Any]:
        village = (worker * 7) % VILLAGES
        district = village // VILLAGES_PER_DISTRICT
        return {
            "nik_masked": "1771********0001",
            "village": f"Desa {village}",
            "district": f"Kecamatan {district}",
            "regency": f"Kabupaten {district % REGENCIES}",
        }

    return await seed_province(
        engine,
        Province(
            rows,
            dues_payments(sponsorships),
            opds=opds,
            now=NOW,
            idle_asn=IDLE_ASN,
            worker_extra=worker,
        ),
    )


def charts(board: CoverageDashboard) -> list[str]:
    """The page's three charts, as the web page draws them."""
    weeks = [f"{week.week_start:%d/%m}" for week in board.weeks]
    return [
        progress_bar(
            chart_id="progress",
            title="Capaian target",
            reached=board.progress.reached,
            target=board.progress.target,
            caption=f"{board.progress.reached} dari {board.progress.target} pekerja",
            no_target_text="belum ada target",
        ),
        bar_chart(
            chart_id="weeks",
            title="Per minggu",
            categories=weeks,
            series=[
                Series("Pendaftaran", [week.enrollments for week in board.weeks]),
                Series("Kartu", [week.cards for week in board.weeks]),
                Series("Tidak aktif", [week.lapses for week in board.weeks]),
            ],
        ),
        histogram(
            chart_id="paid",
            title="Iuran lunas sampai",
            buckets=[(standing.value, board.paid[standing]) for standing in PaidStanding],
        ),
    ]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.5 * len(ordered)) - 1)]


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work()
    return time.perf_counter() - started, result


async def measure(url: str, sponsorships: int, runs: int, breakdown: bool) -> dict[str, Any]:
    await empty_database(url)
    engine = create_engine(url)
    backend = "sqlite" if is_sqlite(url) else "postgresql"
    targets = load_targets(shipped(COVERAGE_TARGETS))
    try:
        started = time.perf_counter()
        seeded = await seed(engine, sponsorships)
        if is_sqlite(url):
            async with engine.begin() as connection:
                await connection.exec_driver_sql("ANALYZE")
        await settle(engine)
        print(
            f"[{backend}] seeded {seeded['sponsorships']:,} sponsorships, "
            f"{seeded['payments']:,} payments, {seeded['asn']:,} ASN in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        # The seed writes payment rows directly: their derived paid-until is settled as
        # migration 0014's backfill does (storage.paid_until), then the statistics again.
        started = time.perf_counter()
        async with engine.begin() as connection:
            settled = await settle_paid_until(connection)
        backfill_s = time.perf_counter() - started
        if is_sqlite(url):
            async with engine.begin() as connection:
                await connection.exec_driver_sql("ANALYZE")
        await settle(engine)
        print(
            f"[{backend}] paid-until settled for {settled:,} sponsorships in {backfill_s:.1f} s",
            flush=True,
        )
        page: list[float] = []
        cached: list[float] = []
        one_opd: list[float] = []
        xlsx: list[float] = []
        base: list[float] = []
        board: CoverageDashboard | None = None
        load_before = os.getloadavg()
        # Every page opens its connection, as a request does (the cache opens its own: on
        # SQLite the pool holds one connection, so none may be held around the cache).
        cache = CoverageCache(
            engine,
            targets=targets,
            calendar=CALENDAR,
            zone=JAKARTA,
            clock=lambda: NOW,
            max_age=timedelta(seconds=60),
        )

        async def show(opd_id: int | None) -> CoverageDashboard:
            async with engine.connect() as connection:
                built = await dashboard(
                    connection,
                    opd_id=opd_id,
                    today=TODAY,
                    targets=targets,
                    calendar=CALENDAR,
                    zone=JAKARTA,
                )
            charts(built)
            coverage_csv(built)
            return built

        async def province_page() -> CoverageDashboard:
            return await show(None)

        async def opd_page() -> CoverageDashboard:
            return await show(7)

        async def cached_page() -> CoverageDashboard:
            built = await cache.dashboard(opd_id=None)
            charts(built)
            coverage_csv(built)
            return built

        async def count() -> int:
            async with engine.connect() as connection:
                return int(await connection.scalar(text("SELECT count(*) FROM sponsorship")) or 0)

        await province_page()  # warm-up: caches, the first statement compilations
        await cached_page()  # the first read of the cache
        await count()
        for _ in range(runs):
            seconds, _count = await timed(count)
            base.append(seconds)
            seconds, board = await timed(province_page)
            page.append(seconds)
            seconds, _board = await timed(opd_page)
            one_opd.append(seconds)
            seconds, _board = await timed(cached_page)
            cached.append(seconds)
            assert board is not None
            built = board
            started = time.perf_counter()
            coverage_xlsx(built)
            xlsx.append(time.perf_counter() - started)
        await cache.aclose()
        parts: dict[str, float] = {}
        if breakdown:
            async with engine.connect() as connection:
                parts = await measure_parts(connection)
        load_after = os.getloadavg()
        assert board is not None
        broken = board.tiles.workers != seeded["sponsorships"]
        if broken:
            print(f"BROKEN: {board.tiles.workers} workers counted, {seeded['sponsorships']} seeded")
        # The villages come from `coverage_area` (kept by triggers through the seed's bulk
        # inserts and status updates): they must equal the join they replace.
        async with engine.connect() as connection:
            joined = await coverage_module.areas_afresh(connection, opd_id=None)
        if board.areas != joined:
            broken = True
            print(f"BROKEN: coverage_area gives {len(board.areas)} places, the join {len(joined)}")
        figures = {
            "bench": "coverage",
            "backend": backend,
            "sponsorships": seeded["sponsorships"],
            "payments": seeded["payments"],
            "opds": len(board.opds),
            "villages": len(board.areas),
            "runs": runs,
            "page_p50_s": round(p50(page), 4),
            "page_p95_s": round(p95(page), 4),
            "cached_page_p50_s": round(p50(cached), 5),
            "cached_page_p95_s": round(p95(cached), 5),
            "one_opd_p50_s": round(p50(one_opd), 4),
            "one_opd_p95_s": round(p95(one_opd), 4),
            "xlsx_p95_s": round(p95(xlsx), 4),
            "count_p50_s": round(p50(base), 5),
            "count_p95_s": round(p95(base), 5),
            "page_over_count_p95": round(p95(page) / p95(base), 1),
            "cached_over_count_p95": round(p95(cached) / p95(base), 2),
            "paid_until_backfill_s": round(backfill_s, 2),
            "parts_s": {name: round(value, 4) for name, value in parts.items()},
            "load_1min_before": round(load_before[0], 2),
            "load_1min_after": round(load_after[0], 2),
            "utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            "python": platform.python_version(),
            "broken": broken,
        }
        for label, values in (("read afresh", page), ("from the cache", cached)):
            verdict = "met" if p95(values) <= TARGET_P95_S else "MISS"
            print(
                f"[{backend}] province page {label}: p50 {p50(values) * 1000:.1f} ms, "
                f"p95 {p95(values) * 1000:.1f} ms (goal {TARGET_P95_S * 1000:.0f} ms: "
                f"{verdict}); {p95(values) / p95(base):.1f}x the SELECT count(*) p95 "
                f"{p95(base) * 1000:.1f} ms"
            )
        print(
            f"[{backend}] one OPD page p50 {p50(one_opd) * 1000:.0f} ms, "
            f"p95 {p95(one_opd) * 1000:.0f} ms; XLSX of the province p95 "
            f"{p95(xlsx) * 1000:.0f} ms"
        )
        if parts:
            print(
                f"[{backend}] parts: "
                + ", ".join(f"{name} {value * 1000:.0f} ms" for name, value in parts.items())
            )
        print(
            f"[{backend}] load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
            f"(1 min; {os.cpu_count()} CPUs)"
        )
        print(json.dumps(figures), flush=True)
        return figures
    finally:
        await engine.dispose()


async def measure_parts(connection: AsyncConnection) -> dict[str, float]:
    """Each of the dashboard's reads once (after the runs: caches warm)."""
    parts: dict[str, float] = {}
    for name, work in (
        ("asn", lambda: connection.execute(coverage_module._asn_counts())),
        ("workers", lambda: connection.execute(coverage_module._worker_counts())),
        (
            "paid_until",
            lambda: coverage_module.paid_standings(connection, today=TODAY, calendar=CALENDAR),
        ),
        (
            "weeks",
            lambda: coverage_module._weekly(
                connection, opd_id=None, today=TODAY, weeks=12, zone=JAKARTA
            ),
        ),
        ("villages", lambda: coverage_module.areas_counted(connection)),
        ("villages_afresh", lambda: coverage_module.areas_afresh(connection, opd_id=None)),
        (
            "count_payments",
            lambda: connection.scalar(select(func.count()).select_from(Payment)),
        ),
    ):
        parts[name], _ = await timed(work)
    return parts


async def main_async(args: argparse.Namespace) -> int:
    broken = False
    with tempfile.TemporaryDirectory(prefix="bench-coverage-") as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'coverage.sqlite3'}"
        if not args.skip_sqlite:
            broken |= bool(
                (await measure(url, args.sponsorships, args.runs, args.breakdown))["broken"]
            )
    if args.database_url:
        figures = await measure(args.database_url, args.sponsorships, args.runs, args.breakdown)
        broken |= bool(figures["broken"])
    return 1 if broken else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sponsorships", type=int, default=144_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.sponsorships < 1:
        parser.error("--runs and --sponsorships must be positive")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
