"""Benchmark: reply latency through the Telegram adapter, without and with one person's 429.

A child process runs the fake Bot API of the tests (tests/fakes/telegram_api.py,
127.0.0.1) and the load: `--users` people, each in a closed loop (send a
message, wait for the bot's first reply, think `--think-ms`, send the next),
for `--duration` seconds. A reply's latency is measured inside that process,
from the moment the update was queued for getUpdates to the moment the fake
accepted the bot's first sendMessage for it, so both ends use one clock. The
parent process is the bot: the real runtime on a fresh SQLite database and
`TelegramChannel.run_polling`, exactly as `sertakan run` polls.

Two scenarios per bot:

- `clean`: no fault;
- `429`: one person's replies are answered 429 with retry_after 3 s for half a
  second, a few seconds into the run; the figure is the p99 of the *other*
  people (one person's fault must not hold the others).

The baseline is a bare aiogram echo bot (`Dispatcher.start_polling`, one
handler answering every message) under the same load and the same fault, in
the same run.

The file imports only what older versions of the adapter had too, so the same
file measures an earlier commit (copy it into a checkout of that commit and
run `--bots ours`): `docs/BENCHMARKS.md` pairs both.

    python -m bench.bench_replies [--users 16] [--duration 20] [--think-ms 50]
                                  [--bots ours,echo] [--scenarios clean,429]

Columns: p50, p99 and max of the other people's reply latency, how many of
their replies took over 1 s, and how many people were never answered (the
echo bot's handler drops a reply refused with 429). Exit code 0 for any
measurement; 1 when our bot left someone unanswered.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import SecretStr

import sertakan_data
from sertakan_data import shipped

BASE_USER = 7_500_000_000
#: What each person types, in turn (answered by the menus; no flow state needed).
SCRIPT = ("/start", "bantuan", "menu", "info")
FAULT_AT_S = 3.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


# --- the child: fake Bot API and the load ------------------------------------------


def _platform(pipe: Connection, users: int, duration: float, think_s: float, fault: bool) -> None:
    asyncio.run(_platform_main(pipe, users, duration, think_s, fault))


async def _platform_main(
    pipe: Connection, users: int, duration: float, think_s: float, fault: bool
) -> None:
    from tests.fakes.telegram_api import FakeTelegramServer

    async with FakeTelegramServer() as server:
        pipe.send({"base_url": server.base_url, "token": server.token})
        # The bot is up once it polls.
        await server.wait_until(lambda: bool(server.calls_of("getUpdates")), timeout=60)
        latencies: dict[int, list[float]] = {n: [] for n in range(users)}
        unanswered = 0
        started = time.monotonic()
        slow = BASE_USER

        async def person(n: int) -> None:
            nonlocal unanswered
            chat = BASE_USER + n
            step = 0
            while time.monotonic() - started < duration:
                before = len(server.messages_to(chat))
                pushed = time.monotonic()
                server.push_update(server.text_update(chat, SCRIPT[step % len(SCRIPT)]))
                step += 1

                def answered(chat: int = chat, before: int = before) -> bool:
                    return len(server.messages_to(chat)) > before

                try:
                    await server.wait_until(answered, timeout=30)
                except TimeoutError:
                    unanswered += 1
                    return
                first = server.messages_to(chat)[before]
                latencies[n].append(first.at - pushed)
                await asyncio.sleep(think_s)

        async def inject() -> None:
            await asyncio.sleep(FAULT_AT_S)
            server.fault_for("sendMessage", 0.5, "429", chat_id=slow, retry_after=3)

        tasks = [asyncio.create_task(person(n)) for n in range(users)]
        if fault:
            tasks.append(asyncio.create_task(inject()))
        await asyncio.gather(*tasks)
        others = [value for n in range(1, users) for value in latencies[n]]
        pipe.send(
            {
                "others": others,
                "slow": latencies[0],
                "unanswered": unanswered,
                "faults": server.faults_played["429"],
                "updates": sum(len(v) for v in latencies.values()),
            }
        )
        pipe.recv()  # the bot has stopped: close the server


# --- the parent: the bots ----------------------------------------------------------------


async def _run_ours(base_url: str, token: str, stop: asyncio.Event) -> None:
    from bot.app import build_runtime, seed_opds_if_empty
    from bot.settings import (
        AppSettings,
        DatabaseSettings,
        Settings,
        TelegramSettings,
    )
    from bot.telegram import TelegramChannel
    from storage.crypto import generate_key
    from storage.migrate import upgrade_to_head

    folder = Path(tempfile.mkdtemp(prefix="bench-replies-"))
    url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    await upgrade_to_head(url)
    settings = Settings(
        app=AppSettings(
            data_dir=folder,
            nik_key=SecretStr(generate_key()),
            opd_seed_file=shipped(sertakan_data.OPD_SEED),
        ),
        database=DatabaseSettings(url=url, auto_migrate=False),
        telegram=TelegramSettings(token=SecretStr(token), api_base=base_url, polling_timeout_s=10),
    )
    runtime = await build_runtime(settings, migrate=False)
    await seed_opds_if_empty(runtime)
    extra: dict[str, Any] = {}
    accepted = inspect.signature(TelegramChannel).parameters
    if "database" in accepted:  # the durable reply queue (issue 11)
        extra = {"database": runtime.db, "cipher": runtime.cipher}
    channel = TelegramChannel(
        runtime.engine, settings.telegram, runtime.clock, catalogs=runtime.catalogs, **extra
    )
    try:
        await channel.run_polling(stop)
    finally:
        await channel.close()
        await runtime.close()


async def _run_echo(base_url: str, token: str, stop: asyncio.Event) -> None:
    # Imported here: an older checkout measured with `--bots ours` need not have it.
    from bench.echo_bot import run_echo

    await run_echo(base_url, token, stop)


async def _round(bot: str, fault: bool, args: argparse.Namespace) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_platform,
        args=(child, args.users, args.duration, args.think_ms / 1000, fault),
        daemon=True,
    )
    process.start()
    loop = asyncio.get_running_loop()
    hello = await loop.run_in_executor(None, parent.recv)
    stop = asyncio.Event()
    runner = _run_ours if bot == "ours" else _run_echo
    task = asyncio.create_task(runner(hello["base_url"], hello["token"], stop))
    result: dict[str, Any] = await loop.run_in_executor(None, parent.recv)
    stop.set()
    await asyncio.wait_for(task, 30)
    parent.send("done")
    process.join(10)
    return result


def _summary(bot: str, scenario: str, result: dict[str, Any]) -> dict[str, Any]:
    others = [value * 1000 for value in result["others"]]
    return {
        "bot": bot,
        "scenario": scenario,
        "updates": result["updates"],
        "p50_ms": round(statistics.median(others), 1) if others else None,
        "p99_ms": round(percentile(others, 0.99), 1),
        "max_ms": round(max(others), 1) if others else None,
        "others_over_1s": sum(value > 1000 for value in others),
        "slow_person_max_ms": round(max(result["slow"]) * 1000, 1) if result["slow"] else None,
        "faults": result["faults"],
        "unanswered": result["unanswered"],
    }


async def main_async(args: argparse.Namespace) -> int:
    rows = []
    for scenario in args.scenarios.split(","):
        for bot in args.bots.split(","):
            result = await _round(bot, scenario == "429", args)
            rows.append(_summary(bot, scenario, result))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"reply latency, {args.users} people, closed loop ({args.think_ms} ms think time)")
    print(
        f"{'bot':<6}{'scenario':<10}{'updates':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'> 1 s':>7}{'lost':>6}"
    )
    for row in rows:
        print(
            f"{row['bot']:<6}{row['scenario']:<10}{row['updates']:>9}"
            f"{row['p50_ms']:>9}{row['p99_ms']:>9}{row['max_ms']:>9}"
            f"{row['others_over_1s']:>7}{row['unanswered']:>6}"
        )
    by = {(row["bot"], row["scenario"]): row for row in rows}
    for scenario in ("clean", "429"):
        ours, echo = by.get(("ours", scenario)), by.get(("echo", scenario))
        if ours and echo:
            print(f"{scenario}: p99 ours/echo = {ours['p99_ms'] / echo['p99_ms']:.2f}x")
    print(
        json.dumps(
            {
                "benchmark": "replies",
                "rows": rows,
                "python": platform.python_version(),
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    )
    # The echo bot loses the reply aiogram's handler got a 429 for: a finding, not a
    # broken run. Ours must answer everybody.
    return 1 if any(row["unanswered"] for row in rows if row["bot"] == "ours") else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--think-ms", type=float, default=50.0)
    parser.add_argument("--bots", default="ours,echo")
    parser.add_argument("--scenarios", default="clean,429")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
