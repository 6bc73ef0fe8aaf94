"""Benchmark: the web verification queue with 5,000 enrollments waiting in one OPD.

A fresh database (SQLite in a temporary file, or the PostgreSQL database given with
--database-url, whose public schema is dropped first) holds N enrollments waiting for
the PIC of one OPD and `--others` sponsorships of other OPDs (active), with their
workers and ASN. The web workbench (`bot.web`, as `sertakan run` mounts it) is served
on 127.0.0.1 and a PIC's session is opened as a sign-in link would open it.

    python -m bench.bench_web_queue [--waiting 5000] [--others 20000] [--runs 30]
                                    [--database-url postgresql+asyncpg://...]

Measured `--runs` times, interleaved, over real HTTP on the loopback (so each figure
is the server's time plus one local round trip: an upper bound of the server time):
the queue's first page (50 rows of 5,000), its last page (keyset: the 50 after
the 4,950th, as the "next" links reach it), the queue filtered by a name, and the
baseline, a plain `SELECT count(*) FROM sponsorship` over the same rows on an
open connection. p50 and p95 (nearest rank) of each, and each page's p95
against the baseline's. Goal (issue 13): the paged queue p95 <= 200 ms, on SQLite
and PostgreSQL. The machine's load average is printed: compare figures only when it
is near zero.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.province import Province, empty_database, seed_province
from bot.app import build_runtime
from bot.settings import AppSettings, DatabaseSettings, Settings, TelegramSettings
from bot.web.app import COOKIE, add_web_routes, web_parts
from domain.tariff import FundingSource
from domain.vocabulary import (
    Occupation,
    PaymentPlan,
    SponsorshipStatus,
    WorkerConsent,
)
from storage.crypto import generate_key
from storage.db import create_engine, is_sqlite
from storage.models import Sponsorship
from storage.web_access import Principal, WebRole, open_session
from storage.web_queries import QueueCursor

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
PER_ASN = 3


async def seed(engine: AsyncEngine, waiting: int, others: int) -> int:
    """OPD 1 (the PIC's, `waiting` enrollments waiting) and OPD 2 (`others` active);
    returns the PIC's channel account id."""
    total = waiting + others
    rows = [
        {
            "id": index,
            "worker_id": index,
            "asn_id": 1 + (index - 1) // PER_ASN,
            "opd_id": 1 if index <= waiting else 2,
            "occupation": Occupation.DRIVER,
            "plan": PaymentPlan.MONTHLY,
            "first_month": date(2026, 12, 1),
            "status": (
                SponsorshipStatus.WAITING_FOR_PIC if index <= waiting else SponsorshipStatus.ACTIVE
            ),
            "worker_consent": WorkerConsent.GIVEN,
            "funding_source": FundingSource.ASN_PERSONAL,
            "created_at": NOW,
            "status_changed_at": NOW,
        }
        for index in range(1, total + 1)
    ]
    province = Province(
        rows,
        opds=[("OPD-1", "Dinas 1"), ("OPD-2", "Dinas 2")],
        now=NOW,
        per_asn=PER_ASN,
        pic_opds=[1],
        asn_opd=lambda asn: 1 if (asn - 1) * PER_ASN < waiting else 2,
        worker_extra=lambda _worker: {
            "birth_place": "Bengkulu",
            "street_address": "Jl. Melati 5",
            "regency": "Kota Bengkulu",
        },
    )
    await seed_province(engine, province)
    return province.asn_count + 1


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.5 * len(ordered)) - 1)]


async def timed(work: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await work()
    return (time.perf_counter() - started) * 1000


async def measure(url: str, waiting: int, others: int, runs: int, data_dir: Path) -> bool:
    await empty_database(url)
    backend = "sqlite" if is_sqlite(url) else "postgresql"
    settings = Settings(
        app=AppSettings(
            data_dir=data_dir, nik_key=SecretStr(generate_key()), timezone="Asia/Jakarta"
        ),
        database=DatabaseSettings(url=url, auto_migrate=False),
        telegram=TelegramSettings(token=None),
    )
    # First, on the empty database: the key is recorded before the seed's fake NIKs exist.
    runtime = await build_runtime(settings, migrate=False)
    started = time.perf_counter()
    pic_account = await seed(runtime.db, waiting, others)
    async with runtime.db.begin() as connection:
        await connection.exec_driver_sql("ANALYZE")
    print(
        f"[{backend}] seeded {waiting:,} waiting + {others:,} other sponsorships in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    app = web.Application()
    add_web_routes(app, web_parts(runtime))
    server = TestServer(app)
    await server.start_server()
    try:
        async with runtime.db.begin() as connection:
            token = await open_session(
                connection,
                Principal(WebRole.PIC, channel_account_id=pic_account),
                language="id",
                now=runtime.clock(),
            )
        # The last page: the 50 after the enrollment just before them, as its "next" link
        # gives it (every seeded enrollment changed status at NOW; ties go by id).
        last_after = QueueCursor(NOW, max(0, waiting - 50)).token()
        # Its own engine: on SQLite the runtime's pool is one connection, the pages'.
        counting = create_engine(url)
        async with ClientSession(cookies={COOKIE: token}) as client, counting.connect() as base:

            async def get(path: str, expect: str) -> None:
                async with client.get(server.make_url(path)) as response:
                    body = await response.text()
                    if response.status != 200 or expect not in body:
                        raise RuntimeError(f"{path}: {response.status}")

            async def count() -> None:
                await base.scalar(select(func.count()).select_from(Sponsorship))
                # Ends the transaction (on SQLite a BEGIN IMMEDIATE: the write lock).
                await base.commit()

            cases: dict[str, Callable[[], Awaitable[None]]] = {
                "queue, page 1": lambda: get("/web/queue", "Pekerja 1<"),
                "queue, last page": lambda: get(
                    f"/web/queue?after={last_after}", f"Pekerja {waiting}<"
                ),
                "queue, name filter": lambda: get("/web/queue?q=pekerja+49", "Pekerja 49<"),
                "SELECT count(*)": count,
            }
            for work in cases.values():  # warm-up: caches, the session, the planner
                await work()
            times: dict[str, list[float]] = {name: [] for name in cases}
            load = os.getloadavg()
            for _ in range(runs):
                for name, work in cases.items():
                    times[name].append(await timed(work))
        await counting.dispose()
        baseline = p95(times["SELECT count(*)"])
        print(f"[{backend}] {runs} runs, load average before {load[0]:.2f}")
        met = True
        for name, values in times.items():
            ratio = (
                ""
                if name == "SELECT count(*)"
                else f"  p95 = {p95(values) / baseline:,.0f}x baseline"
            )
            print(f"  {name:24} p50 {p50(values):7.1f} ms  p95 {p95(values):7.1f} ms{ratio}")
            if name.startswith("queue") and p95(values) > 200:
                met = False
        print(f"  goal p95 <= 200 ms: {'MET' if met else 'MISSED'}")
        return met
    finally:
        await server.close()
        await runtime.close()


async def main_async(args: argparse.Namespace) -> int:
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}"
        await measure(url, args.waiting, args.others, args.runs, Path(folder))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, default=5000)
    parser.add_argument("--others", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
