"""Benchmark: enrollment conversations end to end over real HTTP, 1-256 people, and idle memory.

A child process runs the tests' fake Bot API (tests/fakes/telegram_api.py on
127.0.0.1) and the load: at each level N (default 1, 4, 16, 64, 256), N new
people each go through the conversation in a closed loop, sending their next
step only when the bot has answered the previous one. Setup per person (not
timed): the 9 updates of registering as an ASN. Timed: the 15 updates of one
enrollment (the same script as `bench.bench_enrollment`). Button presses use
the callback_data the bot sent. A reply's time runs from the update being
queued for getUpdates to the fake accepting the bot's first sendMessage for it
(one clock, in the child). A person waits for all of a step's messages (their
number per step is learnt from one person going through the conversation
alone first) before the next step.

The parent process is the bot, long polling as `sertakan run` does:

- `ours`: the real runtime on a fresh SQLite file and `TelegramChannel.run_polling`
  with the dead-letter store, the reply queue and the send budget, as
  `bot.cli._run_channels` wires them. The budget is set to its highest rate
  (`DISPATCH_TELEGRAM_RATE_PER_S=1000`, no margin): Telegram's real 30/s would
  cap both bots alike, and the question is what the bot itself costs;
- `echo`: a bare aiogram echo bot (`bench/echo_bot.py`: `Dispatcher.start_polling`,
  one message and one callback handler) under the same load, in the same run.
  Its presses carry made-up callback data; each of its steps has one reply;
- `batch` (only when asked for with `--bots`): `ours` without the Telegram inbound
  journal, confirming a batch only after all of it was handled (as before the journal).

With `--rounds R` the bots take turns R times (ours, echo, ours, echo, ...), and each
figure is the median of its R rounds, so a load change on a shared machine hits
both bots alike.

Then idle memory: `python -m bot run` (Telegram polling against a fake Bot API,
SQLite in a fresh folder) and `python -m bench.echo_bot` as processes of their
own; each one's VmRSS is read from /proc after it has polled for `--settle` s.

    python -m bench.bench_e2e [--levels 1,4,16,64,256] [--bots ours,echo] [--rounds 1]
                              [--profile FILE] [--no-rss] [--rss-only]

Goals (issue 14): p99 reply time at 64 people <= 2x the echo bot's; idle RSS
<= 1.3x the echo bot's. Exit code 0 for any measurement (MISS is a result);
1 when a run was broken (a person not answered, sponsorships missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import multiprocessing
import os
import platform
import pstats
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.telegram_api import FakeTelegramServer

REPO_ROOT = str(Path(__file__).resolve().parents[1])
BASE_USER = 600_000_000
TOKEN = "123456789:BENCH-e2e-token_abcdefghijklmnopqrst"
GOAL_P99_RATIO = 2.0
GOAL_RSS_RATIO = 1.3
#: The level whose p99 the goal is about.
GOAL_LEVEL = 64
#: Our bot: `ours` with the Telegram inbound journal (as `sertakan run` polls), `batch`
#: without it (a batch confirmed only after all of it was handled: the same-run baseline
#: of the journal's effect).
OURS = ("ours", "batch")
#: A person not answered within this long breaks the run.
REPLY_TIMEOUT_S = 60.0
#: While learning a step's number of messages: quiet this long means the step is done.
CALIBRATION_QUIET_S = 0.5


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank `share` percentile of `values` (NaN when empty)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


# --- the child: fake Bot API and the people ---------------------------------------------


def _load(pipe: Connection, bot: str, levels: list[int]) -> None:
    asyncio.run(_load_main(pipe, bot, levels))


def _load_server() -> FakeTelegramServer:
    """The fake Bot API with one inbox per chat, so a waiting person wakes only for their own."""
    from tests.fakes.telegram_api import FakeTelegramServer, SentMessage

    class LoadServer(FakeTelegramServer):
        def __init__(self) -> None:
            super().__init__(token=TOKEN)
            self.inbox: dict[int, list[SentMessage]] = {}
            self.waiting: dict[int, asyncio.Event] = {}

        async def _send_message(self, params: dict[str, Any]) -> Any:
            before = len(self.sent)
            answer = await super()._send_message(params)
            if len(self.sent) > before:
                message = self.sent[-1]
                self.inbox.setdefault(message.chat_id, []).append(message)
                waiting = self.waiting.pop(message.chat_id, None)
                if waiting is not None:
                    waiting.set()
            return answer

        async def wait_inbox(self, chat: int, count: int, timeout: float) -> None:  # noqa: ASYNC109
            inbox = self.inbox.setdefault(chat, [])
            async with asyncio.timeout(timeout):
                while len(inbox) < count:
                    event = self.waiting.setdefault(chat, asyncio.Event())
                    await event.wait()

    return LoadServer()


class Broken(RuntimeError):
    """A person was not answered as the conversation needs: no figures are reported."""


async def _load_main(pipe: Connection, bot: str, levels: list[int]) -> None:
    from bench.bench_enrollment import ENROLLMENT, REGISTRATION, BenchBroken, Step, pick_button

    server: Any = _load_server()
    async with server:
        pipe.send({"base_url": server.base_url, "token": server.token})
        await server.wait_until(lambda: bool(server.calls), timeout=60)

        def update_for(chat: int, index: int, step: Step) -> dict[str, Any]:
            kind, argument = step
            value = argument(index)
            if kind == "text":
                return dict(server.text_update(chat, value))
            if kind == "contact":
                return dict(server.contact_update(chat, value))
            inbox = server.inbox.get(chat, [])
            if bot == "echo":
                message_id = inbox[-1].message_id if inbox else 1
                return dict(server.callback_update(chat, "x", message_id))
            keyboards = [m for m in inbox if m.callback_data]
            if not keyboards:
                raise Broken(f"chat {chat}: no keyboard to press {value!r}")
            latest = keyboards[-1]
            labels = [
                (button["text"], button["callback_data"])
                for row in latest.reply_markup["inline_keyboard"]
                for button in row
                if "callback_data" in button
            ]
            data = pick_button(labels, value, f"chat {chat}, last text {inbox[-1].text[:120]!r}")
            return dict(server.callback_update(chat, data, latest.message_id))

        async def learn(steps: list[Step], index: int) -> list[int]:
            """How many messages each step sends, from one person going through alone."""
            chat = BASE_USER + index
            counts: list[int] = []
            for step in steps:
                seen = len(server.inbox.setdefault(chat, []))
                server.push_update(update_for(chat, index, step))
                await server.wait_inbox(chat, seen + 1, REPLY_TIMEOUT_S)
                while True:
                    try:
                        have = len(server.inbox[chat])
                        await server.wait_inbox(chat, have + 1, CALIBRATION_QUIET_S)
                    except TimeoutError:
                        break
                counts.append(len(server.inbox[chat]) - seen)
            return counts

        async def person(
            index: int,
            steps: list[Step],
            counts: list[int],
            times: list[float] | None,
            positions: list[int] | None = None,
        ) -> None:
            chat = BASE_USER + index
            for position, (step, count) in enumerate(zip(steps, counts, strict=True)):
                seen = len(server.inbox.setdefault(chat, []))
                pushed = time.monotonic()
                server.push_update(update_for(chat, index, step))
                try:
                    await server.wait_inbox(chat, seen + count, REPLY_TIMEOUT_S)
                except TimeoutError:
                    raise Broken(f"chat {chat}: no answer to {step[0]} within 60 s") from None
                if times is not None:
                    times.append(server.inbox[chat][seen].at - pushed)
                if positions is not None:
                    positions.append(position)

        try:
            registration = await learn(REGISTRATION, 0)
            enrollment = await learn(ENROLLMENT, 0)
            first = 1
            for users in levels:
                people = range(first, first + users)
                first += users
                await asyncio.gather(*(person(i, REGISTRATION, registration, None) for i in people))
                times: list[float] = []
                positions: list[int] = []
                sent_before = len(server.sent)
                started = time.monotonic()
                await asyncio.gather(
                    *(person(i, ENROLLMENT, enrollment, times, positions) for i in people)
                )
                wall = time.monotonic() - started
                pipe.send(
                    {
                        "users": users,
                        "steps": len(times),
                        "wall_s": wall,
                        "times": times,
                        "positions": positions,
                        "updates": users * (len(REGISTRATION) + len(ENROLLMENT)),
                        "messages": len(server.sent) - sent_before,
                    }
                )
            pipe.send(
                {
                    "done": True,
                    "people": first,
                    "messages_per_step": enrollment,
                }
            )
        except (Broken, BenchBroken) as exc:
            pipe.send({"broken": str(exc)})
        pipe.recv()  # the bot has stopped: close the server


# --- the parent: the bots ---------------------------------------------------------------


async def _run_ours(
    base_url: str,
    token: str,
    stop: asyncio.Event,
    folder: Path,
    people: list[int],
    *,
    journal: bool = True,
) -> None:
    from pydantic import SecretStr
    from sqlalchemy import func, select

    import sertakan_data
    from bot.app import build_runtime, seed_opds_if_empty
    from bot.cli import telegram_channel
    from bot.settings import (
        AppSettings,
        DatabaseSettings,
        DispatcherSettings,
        Settings,
        TelegramSettings,
    )
    from sertakan_data import shipped
    from storage.crypto import generate_key
    from storage.models import Sponsorship

    settings = Settings(
        app=AppSettings(
            data_dir=folder,
            nik_key=SecretStr(generate_key()),
            opd_seed_file=shipped(sertakan_data.OPD_SEED),
            log_level="WARNING",
        ),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{folder / 'bench.db'}"),
        telegram=TelegramSettings(token=SecretStr(token), api_base=base_url, polling_timeout_s=10),
        dispatch=DispatcherSettings(telegram_rate_per_s=1000, rate_margin=0),
    )
    runtime = await build_runtime(settings)
    await seed_opds_if_empty(runtime)
    channel = telegram_channel(runtime, journal=journal)
    gc.collect()
    gc.freeze()  # as `sertakan run` does after start-up
    try:
        await channel.run_polling(stop)
        async with runtime.sessionmaker() as session:
            people.append(await session.scalar(select(func.count()).select_from(Sponsorship)) or 0)
    finally:
        await channel.close()
        await runtime.close()


async def _bot_round(
    bot: str, levels: list[int], profiler: cProfile.Profile | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from bench.echo_bot import run_echo

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_load, args=(child, bot, levels), daemon=True)
    process.start()
    loop = asyncio.get_running_loop()
    hello = await loop.run_in_executor(None, parent.recv)
    stop = asyncio.Event()
    sponsorships: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        # The bot's CPU time (every thread of this process: the bot runs here, the people
        # in the child), less sensitive to a busy machine than reply times.
        cpu_mark = time.process_time()
        if profiler is not None:
            profiler.enable()
        if bot in OURS:
            runner = _run_ours(
                hello["base_url"],
                hello["token"],
                stop,
                Path(tmp),
                sponsorships,
                journal=bot == "ours",
            )
        else:
            runner = run_echo(hello["base_url"], hello["token"], stop)
        task = asyncio.create_task(runner)
        rows: list[dict[str, Any]] = []
        while True:
            message: dict[str, Any] = await loop.run_in_executor(None, parent.recv)
            if "users" in message:
                now_cpu = time.process_time()
                # This level's people, registering and enrolling (the first level's
                # figure also holds the bot's start-up).
                message["cpu_s"] = now_cpu - cpu_mark
                cpu_mark = now_cpu
                rows.append(message)
                print(json.dumps({"bot": bot, **_summary(message)}), flush=True)
                continue
            break
        stop.set()
        await asyncio.wait_for(task, 60)
        if profiler is not None:
            profiler.disable()
    parent.send("done")
    process.join(10)
    if "broken" in message:
        raise Broken(f"{bot}: {message['broken']}")
    if bot in OURS and sponsorships != [message["people"]]:
        raise Broken(f"expected {message['people']} sponsorships, found {sponsorships}")
    return rows, message


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    times = [value * 1000 for value in row["times"]]
    p99 = percentile(times, 0.99)
    summary = {
        "users": row["users"],
        "steps": row["steps"],
        "steps_per_s": round(row["steps"] / row["wall_s"], 1),
        "messages_per_s": round(row["messages"] / row["wall_s"], 1),
        "p50_ms": round(statistics.median(times), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(times), 1),
    }
    if "cpu_s" in row:
        # The bot process's CPU time per update of the level (registration and
        # enrollment): less sensitive to a busy machine than the reply times.
        summary["cpu_ms_per_update"] = round(row["cpu_s"] * 1000 / row["updates"], 3)
    positions = row.get("positions")
    if positions and len(positions) == len(times):
        # Where the tail comes from: the last step ("Kirim ke PIC") against the others.
        last = max(positions)
        sent = [ms for ms, at in zip(times, positions, strict=True) if at == last]
        other = [ms for ms, at in zip(times, positions, strict=True) if at != last]
        tail = [at for ms, at in zip(times, positions, strict=True) if ms >= p99]
        summary |= {
            "send_p50_ms": round(statistics.median(sent), 1),
            "send_p99_ms": round(percentile(sent, 0.99), 1),
            "others_p99_ms": round(percentile(other, 0.99), 1),
            "tail_send_share": round(tail.count(last) / len(tail), 2),
        }
    return summary


# --- idle memory -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0])
    return fields


async def _idle_rss(bot: str, settle_s: float) -> dict[str, int]:
    """Start the bot as its own process against a fresh fake, let it poll, read its RSS."""
    from tests.fakes.telegram_api import FakeTelegramServer

    async with FakeTelegramServer(token=TOKEN) as server:
        with tempfile.TemporaryDirectory(prefix="bench-e2e-rss-") as tmp:
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": tmp,
                "LANG": "C.UTF-8",
            }
            if bot == "ours":
                command = [sys.executable, "-m", "bot", "run"]
                env |= {
                    "TELEGRAM_TOKEN": TOKEN,
                    "TELEGRAM_API_BASE": server.base_url,
                    "TELEGRAM_POLLING_TIMEOUT_S": "10",
                    "SERTAKAN_DATA_DIR": tmp,
                    "SERTAKAN_LOG_LEVEL": "WARNING",
                    "WEB_HOST": "127.0.0.1",
                    "WEB_PORT": str(_free_port()),
                }
            else:
                command = [sys.executable, "-m", "bench.echo_bot", server.base_url, TOKEN]
                env["PYTHONPATH"] = REPO_ROOT
            process = await asyncio.create_subprocess_exec(
                *command, cwd=tmp, env=env, stdout=asyncio.subprocess.DEVNULL
            )
            try:
                await server.wait_until(lambda: bool(server.calls_of("getUpdates")), timeout=60)
                await asyncio.sleep(settle_s)
                if process.returncode is not None:
                    raise Broken(f"{bot} exited with {process.returncode} before being measured")
                return _rss_kib(process.pid)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 30)


# --- report -------------------------------------------------------------------------------


def _print_profile(profiler: cProfile.Profile, path: Path, lines: int) -> None:
    profiler.dump_stats(str(path))
    print(f"\ncProfile of the bot process (ours, every level) -> {path}")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)


async def main_async(args: argparse.Namespace) -> int:
    levels = [int(value) for value in args.levels.split(",")]
    bots = args.bots.split(",")
    print(f"load average at start: {_load_average()}", flush=True)
    report: dict[str, Any] = {"benchmark": "e2e", "levels": levels}
    try:
        if not args.rss_only:
            profiler = cProfile.Profile() if args.profile else None
            rounds: dict[str, list[list[dict[str, Any]]]] = {bot: [] for bot in bots}
            for _ in range(args.rounds):
                for bot in bots:
                    rows, done = await _bot_round(bot, levels, profiler if bot == "ours" else None)
                    rounds[bot].append([_summary(row) for row in rows])
                    if bot == "ours":
                        report["ours_messages_per_step"] = done["messages_per_step"]
            by_bot = {bot: _median_rows(runs) for bot, runs in rounds.items()}
            report["rows"] = by_bot
            if args.rounds > 1:
                report["rounds"] = rounds
            _print_levels(by_bot)
            if profiler is not None:
                _print_profile(profiler, args.profile, args.profile_lines)
        if not args.no_rss:
            rss = {bot: await _idle_rss(bot, args.settle) for bot in ("ours", "echo")}
            report["idle_rss_kib"] = rss
            ratio = rss["ours"]["VmRSS"] / rss["echo"]["VmRSS"]
            print(f"\nidle RSS after {args.settle:.0f} s of polling (KiB)")
            for bot, fields in rss.items():
                print(f"  {bot:<5} " + "  ".join(f"{k} {v:,}" for k, v in fields.items()))
            verdict = "PASS" if ratio <= GOAL_RSS_RATIO else "MISS"
            print(f"ours/echo VmRSS: {ratio:.2f}x (goal <= {GOAL_RSS_RATIO}x: {verdict})")
            report["idle_rss_ratio"] = round(ratio, 3)
    except Broken as exc:
        print(f"BROKEN RUN: {exc}")
        return 1
    report |= {
        "load_average_end": _load_average(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    print(json.dumps(report))
    return 0


def _median_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per level, the median of each figure over the rounds."""
    return [
        {key: statistics.median(row[key] for row in level) for key in level[0]}
        for level in zip(*runs, strict=True)
    ]


def _print_levels(by_bot: dict[str, list[dict[str, Any]]]) -> None:
    print("\nenrollment steps, closed loop over HTTP (reply = first message of a step)")
    print(
        f"{'bot':<6}{'people':>7}{'steps':>7}{'steps/s':>9}{'msg/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
    )
    for bot, rows in by_bot.items():
        for row in rows:
            print(
                f"{bot:<6}{row['users']:>7}{row['steps']:>7}{row['steps_per_s']:>9.0f}"
                f"{row['messages_per_s']:>8.0f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
            )
    for bot, rows in by_bot.items():
        for row in rows:
            if "cpu_ms_per_update" in row:
                print(
                    f"{bot:<6}{row['users']:>7} people: bot CPU {row['cpu_ms_per_update']:.2f} ms"
                    " per update (registration and enrollment; the first level with start-up)"
                )
            if "send_p99_ms" in row:
                print(
                    f"{bot:<6}{row['users']:>7} people: last step p50 / p99 "
                    f"{row['send_p50_ms']:.1f} / {row['send_p99_ms']:.1f} ms, other steps p99 "
                    f"{row['others_p99_ms']:.1f} ms, last step's share of the top 1 %: "
                    f"{row['tail_send_share']:.0%}"
                )
    echo = by_bot.get("echo")
    for name in OURS:
        ours = by_bot.get(name)
        if not ours or not echo:
            continue
        for mine, theirs in zip(ours, echo, strict=True):
            ratio = mine["p99_ms"] / theirs["p99_ms"]
            goal = ""
            if mine["users"] == GOAL_LEVEL and name == "ours":
                verdict = "PASS" if ratio <= GOAL_P99_RATIO else "MISS"
                goal = f"  (goal <= {GOAL_P99_RATIO}x: {verdict})"
            print(
                f"{mine['users']:>4} people: p99 {name}/echo {ratio:.2f}x, "
                f"steps/s {name}/echo {mine['steps_per_s'] / theirs['steps_per_s']:.2f}x{goal}"
            )


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,4,16,64,256", help="people per level")
    parser.add_argument("--bots", default="ours,echo", help="of ours, batch, echo")
    parser.add_argument("--rounds", type=int, default=1, help="turns per bot (medians)")
    parser.add_argument("--profile", type=Path, help="cProfile the bot process (ours) to FILE")
    parser.add_argument("--profile-lines", type=int, default=40)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before RSS")
    parser.add_argument("--no-rss", action="store_true", help="skip the idle-memory part")
    parser.add_argument("--rss-only", action="store_true", help="only the idle-memory part")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
