"""Benchmark: a province on 1, 2 and 3 processes behind nginx, against a bare handler.

Each configuration runs behind Debian's nginx with the shipped site
(bench/launcher.py, the launcher of the proof test) on PostgreSQL:

- ours: `sertakan run --workers N` (N = 1, 2, 3) in Telegram webhook mode; the
  load is /start from a new person per update, POSTed to nginx's webhook path
  with the secret header, as Telegram does; the reply time is from the POST to
  the reply's arrival at the fake Bot API (the moment a person would see it);
  the fake runs in a process of its own (tests/fakes/serve.py);
- bare: one aiohttp process whose handler parses the same update and does one
  INSERT per request (asyncpg), behind the same nginx site; its reply time is
  the HTTP answer;
- bare+reply: the same handler that also sends one reply per update, a
  `sendMessage` to a fake Bot API like ours' (its own process) over a
  keep-alive aiohttp client, before it answers: every update of ours answers
  the person, so this is the floor the goal's ratio sits on.

Load is open loop from `--generators` processes of their own (`--generate`):
each sends its share of a fixed arrival schedule (request i at start + i/rate)
over a pool of keep-alive TLS connections (`--connections` each), bodies built
before the start, never waiting for an answer before the next send (a request
whose connection is busy waits for one in the pool; its time counts from its
planned start: a late generator shows as latency, not as a lighter load).
Per configuration: a saturation run (the offered rate, `--overload` or
`--bare-overload`, well above capacity; throughput = answers within the
window), then a run at 70 % of that throughput for p50/p99.

Cost per update (the goal's measure): the CPU time of the server side, in ms
per update answered, read from /proc (utime + stime) for: the bot's processes
(supervisor and children) or the bare handler, nginx (master and workers) and
the PostgreSQL backends connected to the bench's database
(pg_stat_activity), from the run's start until the last answer (ours: the
last reply at the fake) or `--seconds` x 3. Not counted: the load
generators, the fake Bot API (printed apart, with their share of the
machine's busy CPU time from /proc/stat), and PostgreSQL's shared background
processes (WAL writer, checkpointer: shared with other databases). On a
2-core machine where generators and fakes share the cores, throughput ratios
measure the machine; CPU per update measures the code.

    python -m bench.bench_cluster --database-url postgresql+asyncpg://... [--seconds S]
        [--workers 1 2 3] [--generators 2] [--profile FOLDER]

`--profile FOLDER`: ours x1 only, under cProfile (bench/profiled.py: stats and
the SQL statements counted per kind in FOLDER); its CPU figures are the
profiler's, not the product's.
`BENCH_LOG_TAIL=1` in the environment prints the bot's last log lines after
each configuration (to see why a run answered nothing).

Goals (issue 14): cost per update <= 3x the bare handler's, p99 <= 250 ms at
70 % of saturation. Per-core scaling efficiency: throughput(N) /
(throughput(1) * min(N, cores)).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.dispatch_run import fresh_database
from bench.launcher import (
    WEBHOOK_SECRET,
    Nginx,
    Province,
    bot_environment,
    free_port,
    wait_until_answers,
)
from storage.crypto import generate_key
from tests.fakes.serve import RemoteTelegramServer

GOAL_COST_RATIO = 3.0
GOAL_P99_MS = 250.0
FIRST_USER = 800_000_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CHECKOUT = str(Path(__file__).resolve().parents[1])


def start_update(update_id: int, user_id: int, message_id: int, date: int) -> dict[str, Any]:
    """/start from a new person, as the fake Bot API's `text_update` builds it."""
    sender = {
        "id": user_id,
        "is_bot": False,
        "first_name": "Budi",
        "last_name": "Santoso",
        "language_code": "id",
    }
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "from": sender,
            "chat": {
                "id": user_id,
                "first_name": "Budi",
                "last_name": "Santoso",
                "type": "private",
            },
            "date": date,
            "text": "/start",
            "entities": [{"offset": 0, "length": 6, "type": "bot_command"}],
        },
    }


# --- the bare handler (its own process) ----------------------------------------------


async def _bare_main(port: int, dsn: str, reply_api: str | None = None) -> None:
    """The bare handler; with `reply_api` (the fake Bot API's `<base>/bot<token>`) it also
    sends one reply per update, `sendMessage` over a keep-alive aiohttp client, before it
    answers (the fairer floor: every update of ours answers the person)."""
    import asyncpg  # type: ignore[import-untyped]

    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_bare (id bigint, body text)")
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=120))

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        await pool.execute(
            "INSERT INTO bench_bare VALUES ($1, $2)", int(body["update_id"]), str(body)
        )
        if reply_api is not None:
            reply = {"chat_id": body["message"]["chat"]["id"], "text": "Selamat datang"}
            async with http.post(f"{reply_api}/sendMessage", json=reply) as response:
                if not (await response.json())["ok"]:
                    return web.Response(status=502)
        return web.Response(text="ok")

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application()
    app.router.add_post("/telegram/webhook", handle)
    app.router.add_get("/readyz", ready)
    try:
        await web._run_app(app, host="127.0.0.1", port=port, print=None)
    finally:
        await http.close()


# --- open-loop load from processes of their own ----------------------------------------


@dataclasses.dataclass(slots=True)
class Plan:
    """One generator's share of a run (passed to it as JSON)."""

    url: str
    cafile: str
    rate: float
    seconds: float
    index: int
    generators: int
    connections: int
    first_user: int
    first_update: int
    results: str  # where the generator writes [[i, planned, sent, answered, status], ...]


async def _generate(plan: Plan) -> None:
    """Request i = index, index + generators, ... is due at start + i / rate; it goes out on
    the first of `connections` keep-alive connections that is free (each a sender of its
    own: no answer is awaited before the next request is due, and a request due while
    every connection waits for an answer waits in a queue, its time counting from when it
    was due)."""
    date = int(time.time())
    mine = range(plan.index, int(plan.rate * plan.seconds), plan.generators)
    bodies = {
        i: json.dumps(
            start_update(plan.first_update + i, plan.first_user + i, 500_000_000 + i, date),
            separators=(",", ":"),
        ).encode()
        for i in mine
    }
    headers = {SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/json"}
    context = ssl.create_default_context(cafile=plan.cafile)
    context.check_hostname = False
    connector = aiohttp.TCPConnector(limit=plan.connections, ssl=context, keepalive_timeout=120)
    results: list[list[float]] = []
    failures: list[BaseException] = []
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    timeout = aiohttp.ClientTimeout(total=plan.seconds * 3)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def sender() -> None:
            while (item := await due.get()) is not None:
                i, planned = item
                sent = time.monotonic()
                status = 0
                try:
                    async with http.post(plan.url, data=bodies[i], headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = -1
                    if not failures:
                        print(f"generator {plan.index}: {exc!r}", file=sys.stderr, flush=True)
                    failures.append(exc)
                results.append([i, planned, sent, time.monotonic(), status])

        senders = [asyncio.create_task(sender()) for _ in range(plan.connections)]
        print("ready", flush=True)
        # The start, time.monotonic() (one clock for every process on Linux), on stdin once
        # every generator is ready.
        start_at = float(await asyncio.to_thread(sys.stdin.readline))
        for i in mine:
            planned = start_at + i / plan.rate
            delay = planned - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            due.put_nowait((i, planned))
        # What is still queued at the end of the window is not sent: the run is over.
        await asyncio.sleep(max(0.0, start_at + plan.seconds - time.monotonic()))
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                due.get_nowait()
        for _ in senders:
            due.put_nowait(None)
        deadline = start_at + plan.seconds * 3 - time.monotonic()
        _, pending = await asyncio.wait(senders, timeout=max(0.0, deadline))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    _write_json(plan.results, results)


def _write_json(path: str, value: Any) -> None:
    Path(path).write_text(json.dumps(value))


def _read_json(path: str) -> Any:
    return json.loads(Path(path).read_text())


def _make_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)


# --- CPU time from /proc ----------------------------------------------------------------


def cpu_s(pid: int) -> float | None:
    """utime + stime of `pid` in seconds (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree(pid: int) -> list[int]:
    """`pid` and its descendants now."""
    found = [pid]
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                for child in (task / "children").read_text().split():
                    found += tree(int(child))
    return found


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


Groups = dict[str, Callable[[], Awaitable[list[int]]]]


class CpuMeter:
    """CPU seconds per group of processes between `start` and `stop` (a process that
    appeared meanwhile counts from zero; one that ended meanwhile is lost, rare)."""

    def __init__(self, groups: Groups) -> None:
        self._groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self._machine = (0.0, 0.0)

    async def _read(self) -> dict[str, dict[int, float]]:
        read: dict[str, dict[int, float]] = {}
        for name, pids in self._groups.items():
            read[name] = {pid: cpu for pid in await pids() if (cpu := cpu_s(pid)) is not None}
        return read

    async def start(self) -> None:
        self._start = await self._read()
        self._machine = machine_busy_s()

    async def stop(self) -> dict[str, float]:
        end = await self._read()
        busy, _ = machine_busy_s()
        used = {
            name: sum(cpu - self._start[name].get(pid, 0.0) for pid, cpu in pids.items())
            for name, pids in end.items()
        }
        used["machine"] = busy - self._machine[0]
        return used


async def database_backends(dsn: str) -> Callable[[], Awaitable[list[int]]]:
    """A reader of the pids of the PostgreSQL backends connected to `dsn`'s database
    (this bench's own connection left out)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)

    async def pids() -> list[int]:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [int(row["pid"]) for row in rows]

    async def sessions() -> int:
        """Connections ever made to the database (PostgreSQL 14+): a pool too small for
        the load connects and disconnects, and a backend that lived between two reads
        of the meter is missing from the PostgreSQL CPU figure."""
        return int(
            await connection.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
        )

    pids.close = connection.close  # type: ignore[attr-defined]
    pids.sessions = sessions  # type: ignore[attr-defined]
    return pids


# --- one run ------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Run:
    rate: float
    seconds: float
    offered: int
    answered_within: int  # answered (ours: replied) within the window
    answered: int  # answered (ours: replied) at all
    latencies: list[float]
    cpu: dict[str, float]
    generator_lag_p99_ms: float
    #: Seconds the CPU was metered (the run's start to its last answer).
    span: float
    #: The server side's CPU seconds per second with no load (measured before the runs).
    idle_cpu_per_s: float = 0.0
    #: New connections to the database during the run (pg_stat_database.sessions).
    new_sessions: int = 0

    @property
    def throughput(self) -> float:
        return self.answered_within / self.seconds

    def per_update_ms(self, group: str = "server") -> float:
        return self.cpu[group] * 1000 / self.answered if self.answered else float("inf")

    def net_per_update_ms(self) -> float:
        """Server CPU per update less what the server spends idle over the same span."""
        if not self.answered:
            return float("inf")
        return (self.cpu["server"] - self.idle_cpu_per_s * self.span) * 1000 / self.answered


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


@dataclasses.dataclass(slots=True)
class Target:
    """What a run is sent to and how its answers are read."""

    url: str
    cafile: str
    first_user: Callable[[], int]
    first_update: Callable[[], int]
    groups: Groups
    #: (planned-to-arrival seconds per answered request) from the generators' results;
    #: ours waits for the replies at the fake until `deadline` (time.monotonic()).
    replies: Callable[[list[list[float]], int, float], Awaitable[dict[int, float]]]
    on_start: Callable[[], None] = lambda: None
    on_stop: Callable[[], None] = lambda: None
    #: Waits until what a run left in flight is done (ours: no reply for 2 s).
    settle: Callable[[], Awaitable[None]] | None = None


async def run_load(target: Target, args: Any, rate: float, folder: Path) -> Run:
    _make_folder(folder)
    first_user, first_update = target.first_user(), target.first_update()
    generators = []
    plans = []
    for index in range(args.generators):
        plan = Plan(
            url=target.url,
            cafile=target.cafile,
            rate=rate,
            seconds=args.seconds,
            index=index,
            generators=args.generators,
            connections=args.connections,
            first_user=first_user,
            first_update=first_update,
            results=str(folder / f"generator{index}.json"),
        )
        plans.append(plan)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_cluster",
            "--generate",
            json.dumps(dataclasses.asdict(plan)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        generators.append(process)
    for process in generators:
        assert process.stdout is not None
        if await asyncio.wait_for(process.stdout.readline(), 60) != b"ready\n":
            raise RuntimeError("a load generator did not start")
    start_at = time.monotonic() + 0.2
    for process in generators:
        assert process.stdin is not None
        process.stdin.write(f"{start_at!r}\n".encode())
        await process.stdin.drain()

    async def generator_pids() -> list[int]:
        return [process.pid for process in generators if process.returncode is None]

    meter = CpuMeter({**target.groups, "generators": generator_pids})
    sessions = getattr(target.groups["postgres"], "sessions", None)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    sessions_before = await sessions() if sessions is not None else 0
    await meter.start()
    target.on_start()
    metered_from = time.monotonic()
    # The generators' CPU is read before they exit (a process that ended is not in /proc).
    deadline = start_at + args.seconds * 3
    generator_cpu: dict[int, float] = {}

    async def watch_generators() -> None:
        while any(process.returncode is None for process in generators):
            for process in generators:
                if process.returncode is None and (cpu := cpu_s(process.pid)) is not None:
                    generator_cpu[process.pid] = cpu
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch_generators())
    for process in generators:
        await process.wait()
    await watcher
    results = [row for plan in plans for row in _read_json(plan.results)]
    statuses = collections.Counter(int(row[4]) for row in results)
    if set(statuses) != {200}:
        print(f"  answers by HTTP status (-1: none): {dict(statuses)}", flush=True)
    answered_at = await target.replies(results, first_user, deadline)
    cpu = await meter.stop()
    target.on_stop()
    new_sessions = (await sessions() - sessions_before) if sessions is not None else 0
    span = time.monotonic() - metered_from
    cpu["generators"] = sum(generator_cpu.values())
    cpu["server"] = sum(cpu[name] for name in target.groups if name != "fake")
    window_end = start_at + args.seconds
    planned = {int(row[0]): (row[1], row[2]) for row in results}
    latencies = [at - planned[i][0] for i, at in answered_at.items() if i in planned]
    lags = [row[2] - row[1] for row in results]
    return Run(
        rate=rate,
        seconds=args.seconds,
        offered=int(rate * args.seconds),
        answered_within=sum(1 for at in answered_at.values() if at <= window_end),
        answered=len(answered_at),
        latencies=latencies,
        cpu=cpu,
        generator_lag_p99_ms=p(lags, 0.99),
        span=span,
        new_sessions=new_sessions,
    )


def shares(run: Run) -> str:
    machine = run.cpu["machine"] or 1.0
    fake = f", fake {run.cpu['fake'] / machine:4.0%}" if "fake" in run.cpu else ""
    return (
        f"server {run.cpu['server'] / machine:4.0%}, generators "
        f"{run.cpu['generators'] / machine:4.0%}{fake} of the machine's busy "
        f"{run.cpu['machine']:.1f} CPU-s; generator lag p99 {run.generator_lag_p99_ms:.0f} ms; "
        f"new database connections {run.new_sessions}"
    )


def report(name: str, saturated: Run | None, loaded: Run) -> dict[str, Any]:
    row = {
        "saturation": saturated.throughput if saturated is not None else float("nan"),
        "rate70": loaded.rate,
        "p50": p(loaded.latencies, 0.50),
        "p99": p(loaded.latencies, 0.99),
        "cost": loaded.per_update_ms(),
        "net": loaded.net_per_update_ms(),
        "answered70": f"{loaded.answered}/{loaded.offered}",
    }
    print(f"{name}: idle server CPU {loaded.idle_cpu_per_s * 1000:.1f} ms/s", flush=True)
    if saturated is not None:
        print(
            f"  saturation {saturated.throughput:7.1f}/s (offered {saturated.rate:.0f}/s; "
            f"{saturated.per_update_ms():5.2f} server CPU-ms/update, net of idle "
            f"{saturated.net_per_update_ms():5.2f}; {shares(saturated)})",
            flush=True,
        )
    print(
        f"  at {loaded.rate:7.1f}/s: answered {row['answered70']}, "
        f"p50 {row['p50']:6.1f} ms  p99 {row['p99']:6.1f} ms; server CPU-ms/update "
        f"{row['cost']:5.2f} (net of idle {row['net']:5.2f}; {name.split()[0]} "
        f"{loaded.per_update_ms('app'):.2f}, PostgreSQL {loaded.per_update_ms('postgres'):.2f}, "
        f"nginx {loaded.per_update_ms('nginx'):.2f}); {shares(loaded)}",
        flush=True,
    )
    return row


# --- the configurations --------------------------------------------------------------


async def idle_cpu_per_s(target: Target, seconds: float = 5.0) -> float:
    """The server side's CPU seconds per second with no load."""
    meter = CpuMeter({name: pids for name, pids in target.groups.items() if name != "fake"})
    await meter.start()
    await asyncio.sleep(seconds)
    used = await meter.stop()
    return sum(cpu for name, cpu in used.items() if name != "machine") / seconds


async def measure(
    name: str, target: Target, args: Any, overload: float, folder: Path
) -> dict[str, Any]:
    """Saturation, then 70 % of it (`--rate`: that rate alone)."""
    if target.settle is not None:
        await target.settle()
    idle = await idle_cpu_per_s(target)
    saturated = None
    rate = args.rate
    if rate is None:
        saturated = await run_load(target, args, overload, folder / "saturation")
        saturated.idle_cpu_per_s = idle
        if target.settle is not None:
            await target.settle()
        rate = 0.7 * saturated.throughput
    loaded = await run_load(target, args, rate, folder / "at70")
    loaded.idle_cpu_per_s = idle
    return report(name, saturated, loaded)


async def run_ours(args: Any, workers: int, folder: Path) -> dict[str, Any]:
    port = free_port()
    (folder / "nginx").mkdir(parents=True)
    nginx = Nginx(folder / "nginx", port)
    backends = await database_backends(args.dsn)
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
        wrapper: tuple[str, ...] = ()
        if args.profile is not None:
            wrapper = ("bench.profiled", args.profile)
            # The bot runs in its data folder: bench/ is found from the checkout.
            env["PYTHONPATH"] = CHECKOUT
            env["PROFILE_ON_SIGNAL"] = "1"
        province = Province(env, workers, wrapper=wrapper)
        await nginx.start()
        try:
            await province.start()
            await telegram.wait_until(lambda: bool(telegram.calls_of("setWebhook")), timeout=60)
            # Each configuration and run gets its own people and update ids: the database
            # (shared by the configurations) remembers the ids it handled.
            runs = iter(range(10))

            def first_user() -> int:
                return FIRST_USER + workers * 10_000_000 + next(runs) * 1_000_000

            updates = iter(range(10))

            def first_update() -> int:
                return workers * 10_000_000 + next(updates) * 1_000_000

            async def replies(
                results: list[list[float]], first: int, deadline: float
            ) -> dict[int, float]:
                accepted = [int(row[0]) for row in results if row[4] == 200]

                def arrived() -> dict[int, float]:
                    found = {}
                    for i in accepted:
                        sent = telegram.messages_to(first + i)
                        if sent:
                            found[i] = sent[0].at
                    return found

                with contextlib.suppress(TimeoutError):
                    await telegram.wait_until(
                        lambda: all(telegram.messages_to(first + i) for i in accepted),
                        timeout=max(0.1, deadline - time.monotonic()),
                    )
                return arrived()

            async def bot_pids() -> list[int]:
                assert province.process is not None
                return tree(province.process.pid)

            async def nginx_pids() -> list[int]:
                assert nginx._process is not None
                return tree(nginx._process.pid)

            async def fake_pids() -> list[int]:
                process = telegram._process
                return [process.pid] if process is not None else []

            async def settle() -> None:
                while True:
                    count = len(telegram.sent)
                    await asyncio.sleep(2.0)
                    if len(telegram.sent) == count:
                        return

            def profile(sig: signal.Signals) -> None:
                if args.profile is not None and province.process is not None:
                    province.process.send_signal(sig)

            target = Target(
                url=f"{nginx.base}/telegram/webhook",
                cafile=str(folder / "nginx" / "fullchain.pem"),
                on_start=lambda: profile(signal.SIGUSR1),
                on_stop=lambda: profile(signal.SIGUSR2),
                first_user=first_user,
                first_update=first_update,
                groups={
                    "app": bot_pids,
                    "postgres": backends,
                    "nginx": nginx_pids,
                    "fake": fake_pids,
                },
                replies=replies,
                settle=settle,
            )
            return await measure(f"ours x{workers}", target, args, args.overload, folder)
        finally:
            if os.environ.get("BENCH_LOG_TAIL"):
                print(province.log_tail(30))
            await province.stop()
            await nginx.stop()
            await backends.close()  # type: ignore[attr-defined]


async def run_bare(args: Any, folder: Path, *, reply: bool = False) -> dict[str, Any]:
    """The bare handler behind nginx; `reply`: with one sendMessage per update to the fake
    Bot API (in a process of its own, as ours'; its CPU is printed apart, not counted)."""
    async with contextlib.AsyncExitStack() as stack:
        telegram = None
        extra: list[str] = []
        if reply:
            telegram = await stack.enter_async_context(RemoteTelegramServer())
            extra = ["--bare-reply-api", f"{telegram.base_url}/bot{telegram.token}"]
        port = free_port()
        (folder / "nginx").mkdir(parents=True)
        nginx = Nginx(folder / "nginx", port)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_cluster",
            "--bare",
            str(port),
            "--database-url",
            args.dsn,
            *extra,
        )
        backends = await database_backends(args.dsn)
        await nginx.start()
        try:
            await wait_until_answers(f"http://127.0.0.1:{port}/readyz", 60)
            counter = iter(range(10))

            def first() -> int:
                return FIRST_USER + (50 if reply else 0) * 1_000_000 + next(counter) * 1_000_000

            async def answers(results: list[list[float]], _: int, __: float) -> dict[int, float]:
                return {int(row[0]): row[3] for row in results if row[4] == 200}

            async def bare_pids() -> list[int]:
                return [process.pid]

            async def nginx_pids() -> list[int]:
                assert nginx._process is not None
                return tree(nginx._process.pid)

            groups: Groups = {"app": bare_pids, "postgres": backends, "nginx": nginx_pids}
            if telegram is not None:
                fake = telegram

                async def fake_pids() -> list[int]:
                    return [fake._process.pid] if fake._process is not None else []

                groups["fake"] = fake_pids
            target = Target(
                url=f"{nginx.base}/telegram/webhook",
                cafile=str(folder / "nginx" / "fullchain.pem"),
                first_user=first,
                first_update=first,
                groups=groups,
                replies=answers,
            )
            name = "bare+reply x1" if reply else "bare x1"
            return await measure(name, target, args, args.bare_overload, folder)
        finally:
            process.terminate()
            await process.wait()
            await nginx.stop()
            await backends.close()  # type: ignore[attr-defined]


async def main_async(args: Any) -> int:
    # The database is wiped and migrated (never point it at real data); one NIK key serves
    # every configuration on it.
    args.nik_key = generate_key()
    args.dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    cores = os.cpu_count() or 1
    print(f"load average before: {os.getloadavg()}; cores: {cores}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database(args.database_url, Path(tmp)):
            pass
        if not args.no_bare:
            results["bare"] = await run_bare(args, Path(tmp) / "bare")
            results["bare_reply"] = await run_bare(args, Path(tmp) / "bare_reply", reply=True)
        for workers in args.workers:
            results[f"ours{workers}"] = await run_ours(args, workers, Path(tmp) / f"ours{workers}")
    one = results[f"ours{args.workers[0]}"]
    print()
    for workers in args.workers if args.rate is None else ():
        row = results[f"ours{workers}"]
        efficiency = row["saturation"] / (one["saturation"] * min(workers, cores))
        print(f"x{workers}: per-core scaling efficiency {efficiency:.2f}")
    for key, label in (("bare", "bare x1"), ("bare_reply", "bare+reply x1")):
        if key not in results:
            continue
        bare = results[key]
        for workers in args.workers:
            ours = results[f"ours{workers}"]
            ratio = ours["cost"] / bare["cost"]
            verdict = "OK" if ratio <= GOAL_COST_RATIO else "MISS"
            print(
                f"cost per update, ours x{workers} / {label} (server CPU-ms per update at "
                f"70 %): {ours['cost']:.2f} / {bare['cost']:.2f} = {ratio:.1f}x "
                f"(goal <= 3x): {verdict}"
            )
        if args.rate is None:
            print(
                f"throughput ratio {label} / ours x{args.workers[0]} (saturation: the "
                f"machine's, generators and fake included): "
                f"{bare['saturation'] / one['saturation']:.1f}x"
            )
    worst = max(results[f"ours{w}"]["p99"] for w in args.workers)
    verdict = "OK" if worst <= GOAL_P99_MS else "MISS"
    print(f"worst p99 at 70 %: {worst:.0f} ms (goal <= 250 ms): {verdict}")
    print(f"load average after: {os.getloadavg()}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=float, default=10.0, help="each run's length")
    parser.add_argument("--overload", type=float, default=400.0, help="ours' saturation rate")
    parser.add_argument(
        "--bare-overload", type=float, default=3000.0, help="the bare handler's saturation rate"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--connections", type=int, default=64, help="keep-alive connections per generator"
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="one run at this rate, no saturation run"
    )
    parser.add_argument(
        "--no-bare", action="store_true", help="skip the bare handlers (with and without a reply)"
    )
    parser.add_argument("--profile", default=None, help="profile ours (x1) into this folder")
    parser.add_argument("--bare", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bare-reply-api", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--generate", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate is not None:
        asyncio.run(_generate(Plan(**json.loads(args.generate))))
        return 0
    if args.database_url is None:
        parser.error("--database-url is required")
    if args.bare is not None:
        asyncio.run(_bare_main(args.bare, args.database_url, args.bare_reply_api))
        return 0
    if args.profile is not None:
        args.profile = os.path.abspath(args.profile)
    if args.profile is not None and args.workers != [1]:
        parser.error("--profile profiles one process: --workers 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
