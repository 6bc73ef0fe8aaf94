"""Benchmark: a province on 1, 2 and 3 processes behind nginx, against a bare handler.

Each configuration runs behind Debian's nginx with the shipped site
(bench/launcher.py, the launcher of the proof test) on PostgreSQL:

- ours: `sertakan run --workers N` (N = 1, 2, 3) in Telegram webhook mode; the
  load is /start from a new person per update, POSTed by Telegram's fake to
  nginx's webhook path; the reply time is from the POST to the reply's arrival
  at the fake Bot API (the moment a person would see it); the fake runs in a
  process of its own (tests/fakes/serve.py), so its arrival stamps are not
  delayed by this process's load generation;
- bare: one aiohttp process whose handler does one INSERT per request (asyncpg),
  behind the same nginx site; its reply time is the HTTP answer.

Load is open loop (a fixed arrival rate, whatever the answers do) from this
process, separate from the bot's. Per configuration: a saturation run (the
offered rate well above what it can do; throughput = replies per second
received), then a run at 70 % of that throughput for p50/p99.

    python -m bench.bench_cluster --database-url postgresql+asyncpg://... [--seconds S]

Goals (issue 14): cost per update <= 3x the bare handler's (single process,
saturation throughputs), p99 <= 250 ms at 70 % of saturation. Per-core
scaling efficiency: throughput(N) / (throughput(1) * min(N, cores)).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.dispatch_run import fresh_database
from bench.launcher import Nginx, Province, bot_environment, free_port, wait_until_answers
from storage.crypto import generate_key
from tests.fakes.serve import RemoteTelegramServer

#: One request of the load: its reply time in seconds, None when it was not answered.
Send = Callable[[int], Coroutine[Any, Any, float | None]]

GOAL_COST_RATIO = 3.0
GOAL_P99_MS = 250.0
FIRST_USER = 800_000_000


# --- the bare handler (its own process) ----------------------------------------------


async def _bare_main(port: int, dsn: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_bare (id bigint, body text)")

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        await pool.execute(
            "INSERT INTO bench_bare VALUES ($1, $2)", int(body["update_id"]), str(body)
        )
        return web.Response(text="ok")

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application()
    app.router.add_post("/telegram/webhook", handle)
    app.router.add_get("/readyz", ready)
    await web._run_app(app, host="127.0.0.1", port=port, print=None)


# --- open-loop load ------------------------------------------------------------------


async def open_loop(rate: float, seconds: float, send: Send) -> tuple[int, list[float]]:
    """`rate` arrivals per second for `seconds`: (answers that came within the `seconds`,
    reply times in s of every answered request)."""
    started = time.monotonic()
    ends: list[float] = []

    async def timed(i: int) -> float | None:
        latency = await send(i)
        ends.append(time.monotonic())
        return latency

    tasks: list[asyncio.Task[float | None]] = []
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(i)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    within = sum(1 for end in ends if end <= started + seconds)
    return within, [r for r in results if isinstance(r, float)]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def measure(
    name: str,
    send_factory: Callable[[], Send],
    args: Any,
) -> dict[str, float]:
    send = send_factory()
    window = args.seconds
    answered, _ = await open_loop(args.overload, window, send)
    # Throughput: what was answered within the window, the offered rate above it.
    saturation = answered / window
    target = 0.7 * saturation
    send = send_factory()
    _, latencies = await open_loop(target, window, send)
    row = {
        "saturation": saturation,
        "rate70": target,
        "p50": p(latencies, 0.50),
        "p99": p(latencies, 0.99),
    }
    print(
        f"{name:<12} saturation {saturation:7.1f}/s   at 70% ({target:6.1f}/s): "
        f"p50 {row['p50']:6.1f} ms  p99 {row['p99']:6.1f} ms",
        flush=True,
    )
    return row


# --- the configurations --------------------------------------------------------------


async def run_ours(args: Any, workers: int, folder: Path) -> dict[str, float]:
    port = free_port()
    (folder / "nginx").mkdir(parents=True)
    nginx = Nginx(folder / "nginx", port)
    async with RemoteTelegramServer() as telegram:
        env = bot_environment(
            folder,
            args.database_url,
            port=port,
            webhook_url=f"{nginx.base}/telegram/webhook",
            telegram=(telegram.token, telegram.base_url),
            DATABASE_AUTO_MIGRATE="false",
            DISPATCH_TELEGRAM_RATE_PER_S="1000",
            # One database for every configuration: the key its first start recorded.
            SERTAKAN_NIK_KEY=args.nik_key,
        )
        province = Province(env, workers)
        await nginx.start()
        try:
            await province.start()
            await telegram.wait_until(lambda: bool(telegram.calls_of("setWebhook")), timeout=60)
            users = iter(range(FIRST_USER + workers * 10_000_000, 10**12))
            # Each configuration's fake numbers its updates from 1, and the database (shared
            # by the configurations) remembers the ids it handled: a number range per
            # configuration, or the next one's updates are answered as duplicates.
            update_ids = itertools.count(workers * 10_000_000)

            def factory() -> Send:
                async def send(_: int) -> float | None:
                    chat = next(users)
                    update = telegram.text_update(chat, "/start")
                    update["update_id"] = next(update_ids)
                    began = time.monotonic()
                    status = await telegram.post_webhook(update, ssl=nginx.tls)
                    if status != 200:
                        return None
                    with contextlib.suppress(TimeoutError):
                        await telegram.wait_until(
                            lambda: bool(telegram.messages_to(chat)), timeout=args.seconds * 4
                        )
                        return telegram.messages_to(chat)[0].at - began
                    return None

                return send

            return await measure(f"ours x{workers}", factory, args)
        finally:
            await province.stop()
            await nginx.stop()


async def run_bare(args: Any, folder: Path) -> dict[str, float]:
    port = free_port()
    (folder / "nginx").mkdir(parents=True)
    nginx = Nginx(folder / "nginx", port)
    dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_cluster", "--bare", str(port), "--database-url", dsn
    )
    await nginx.start()
    try:
        await wait_until_answers(f"http://127.0.0.1:{port}/readyz", 60)
        connector = aiohttp.TCPConnector(limit=0, force_close=True, ssl=nginx.tls)
        async with aiohttp.ClientSession(connector=connector) as http:

            def factory() -> Send:
                async def send(i: int) -> float | None:
                    began = time.monotonic()
                    url = f"{nginx.base}/telegram/webhook"
                    async with http.post(url, json={"update_id": i}) as response:
                        await response.read()
                        return time.monotonic() - began if response.status == 200 else None

                return send

            return await measure("bare x1", factory, args)
    finally:
        process.terminate()
        await process.wait()
        await nginx.stop()


async def main_async(args: Any) -> int:
    # The database is wiped and migrated (never point it at real data); one NIK key serves
    # every configuration on it.
    args.nik_key = generate_key()
    cores = os.cpu_count() or 1
    print(f"load average before: {os.getloadavg()}; cores: {cores}", flush=True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database(args.database_url, Path(tmp)):
            pass
        results["bare"] = await run_bare(args, Path(tmp) / "bare")
        for workers in args.workers:
            results[f"ours{workers}"] = await run_ours(args, workers, Path(tmp) / f"ours{workers}")
    one = results[f"ours{args.workers[0]}"]["saturation"]
    print()
    for workers in args.workers:
        row = results[f"ours{workers}"]
        efficiency = row["saturation"] / (one * min(workers, cores)) if one else 0.0
        print(f"x{workers}: per-core scaling efficiency {efficiency:.2f}")
    cost = results["bare"]["saturation"] / one if one else float("inf")
    verdict = "OK" if cost <= GOAL_COST_RATIO else "MISS"
    print(f"cost per update vs bare (1 process each): {cost:.1f}x (goal <= 3x): {verdict}")
    worst = max(results[f"ours{w}"]["p99"] for w in args.workers)
    verdict = "OK" if worst <= GOAL_P99_MS else "MISS"
    print(f"worst p99 at 70 %: {worst:.0f} ms (goal <= 250 ms): {verdict}")
    print(f"load average after: {os.getloadavg()}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seconds", type=float, default=10.0, help="each run's length")
    parser.add_argument("--overload", type=float, default=400.0, help="saturation run's rate")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare is not None:
        asyncio.run(_bare_main(args.bare, args.database_url))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
