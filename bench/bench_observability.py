"""What health checks and metrics cost (issue 14 items 4-5).

1. Instrumentation per update: what the adapters add around one engine step
   (`log_context.bound`, `metrics.engine_step`, two `metrics.count_send`), in one
   process and in multiprocess mode (`--workers N`: samples in mmap files),
   against the same loop with nothing inside (the baseline, same run).
2. /readyz and /metrics over real HTTP with the cache off, on a database with
   `--due` due outbox rows and as many sent ones, against /healthz (no database)
   on the same server: the price of one reading.

    .venv/bin/python -m bench.bench_observability --due 20000 --requests 200

PostgreSQL: --database-url postgresql+asyncpg://... (its tables are emptied).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

_INSTRUMENT = r"""
import json, sys, time
from bot import log_context, metrics
from domain.vocabulary import Channel
from scheduler.sending import Sent

calls = int(sys.argv[1])
sent = Sent()

def baseline():
    started = time.perf_counter()
    for i in range(calls):
        pass
    return time.perf_counter() - started

def instrumented():
    started = time.perf_counter()
    for i in range(calls):
        with log_context.bound(update_id="501"), metrics.engine_step(Channel.TELEGRAM):
            pass
        metrics.count_send(Channel.TELEGRAM, "reply", sent)
        metrics.count_send(Channel.TELEGRAM, "reply", sent)
    return time.perf_counter() - started

rounds = [(baseline(), instrumented()) for _ in range(5)]
print(json.dumps(rounds))
"""


def instrumentation(calls: int, multiprocess: bool) -> tuple[float, float]:
    """Median seconds per call: (empty loop, instrumented loop), in a fresh interpreter."""
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory() as folder:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = folder
        output = subprocess.run(
            [sys.executable, "-c", _INSTRUMENT, str(calls)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    rounds = json.loads(output)
    return (
        statistics.median(r[0] for r in rounds) / calls,
        statistics.median(r[1] for r in rounds) / calls,
    )


async def endpoints(database_url: str, due: int, requests: int) -> dict[str, list[float]]:
    from aiohttp import ClientSession, web
    from pydantic import SecretStr
    from sqlalchemy import delete, insert

    from bot.app import build_runtime
    from bot.health import add_health_routes
    from bot.settings import AppSettings, DatabaseSettings, Settings, WebSettings
    from domain.vocabulary import Channel, OutboxStatus
    from storage.crypto import generate_key
    from storage.migrate import upgrade_to_head
    from storage.models import Base, Outbox

    await upgrade_to_head(database_url)
    data = Path(tempfile.mkdtemp())
    settings = Settings(
        app=AppSettings(data_dir=data, nik_key=SecretStr(generate_key())),
        database=DatabaseSettings(url=database_url, auto_migrate=False),
        web=WebSettings(ready_cache_s=0),
    )
    runtime = await build_runtime(settings, migrate=False)
    now = datetime.now(UTC)
    async with runtime.db.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "key_check":
                await connection.execute(delete(table))
        rows: list[dict[str, object]] = [
            {
                "dedupe_key": f"bench:{i}",
                "channel": Channel.TELEGRAM,
                "recipient": str(10_000 + i),
                "kind": "dues_reminder",
                "body": "Iuran",
                "template": None,
                "params": {},
                "status": OutboxStatus.PENDING if i < due else OutboxStatus.SENT,
                "not_before": now - timedelta(seconds=i % 600),
                "attempts": 0,
                "created_at": now,
            }
            for i in range(2 * due)
        ]
        for start in range(0, len(rows), 5000):
            await connection.execute(insert(Outbox), rows[start : start + 5000])
    app = web.Application()
    add_health_routes(app, runtime)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    timings: dict[str, list[float]] = {"/healthz": [], "/readyz": [], "/metrics": []}
    try:
        async with ClientSession() as http:
            for _ in range(requests):
                for path, samples in timings.items():
                    started = time.perf_counter()
                    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                        await response.read()
                    samples.append(time.perf_counter() - started)
    finally:
        await runner.cleanup()
        await runtime.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    print(f"instrumentation per update, {args.calls} calls, median of 5 rounds:")
    for label, multiprocess in (("one process", False), ("multiprocess mode", True)):
        empty, instrumented = instrumentation(args.calls, multiprocess)
        print(
            f"  {label:18} {1e6 * (instrumented - empty):6.1f} µs per update "
            f"(empty loop {1e9 * empty:.0f} ns)"
        )
    url = args.database_url or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
    timings = asyncio.run(endpoints(url, args.due, args.requests))
    base = statistics.median(timings["/healthz"])
    print(
        f"endpoints, cache off, {args.due} due + {args.due} sent outbox rows, {url.split(':')[0]}:"
    )
    for path, samples in timings.items():
        ordered = sorted(samples)
        p50 = statistics.median(ordered)
        p99 = ordered[int(0.99 * (len(ordered) - 1))]
        print(
            f"  {path:9} p50 {1e3 * p50:6.2f} ms  p99 {1e3 * p99:6.2f} ms  "
            f"p50 / healthz {p50 / base:5.1f}x"
        )


if __name__ == "__main__":
    main()
