"""Benchmark: WhatsApp webhook acknowledgement under a steady 200 requests/s.

A server process runs the real `WhatsAppWebhook` on aiohttp (127.0.0.1) over
a fresh SQLite database (migrated, WAL, as `sertakan run` opens it); the
parent process is the load generator: an aiohttp client that sends signed,
Meta-shaped bodies (one text message each, from `--senders` people, with
`--duplicates` of them re-sent copies of an earlier body, as Meta's
redeliveries) on a fixed open-loop schedule of `--rate` per second for
`--duration` seconds. Each request's latency is measured from its scheduled
send time to the complete response, so a slow answer cannot hide the
requests queued behind it.

Three rounds, each on a fresh database and server process:

- `bare`: an aiohttp handler that reads the body and answers 200 (the
  baseline: HTTP, the client and the machine, nothing of ours);
- `webhook`: signature check, dedupe and the journal commit, no processor;
- `webhook+processor`: the same while `InboundProcessor` feeds every recorded
  message to the real conversation engine in the same process (replies go to
  a sink that drops them): the honest case, since both share one event loop
  and SQLite's one connection.

    python -m bench.bench_whatsapp_webhook [--rate 200] [--duration 30] [--senders 2000]
                                           [--duplicates 0.05] [--rounds bare,webhook,...]

Target (issue 5): p99 at most 50 ms on SQLite at 200 requests/s. Exit code 0
for any measurement; 1 when a run was broken (a non-200 answer, a message
missing from or doubled in the journal, or left unprocessed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import multiprocessing
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import func, select

from domain.vocabulary import Language
from handlers.types import QueuedReplies, Reply

TARGET_P99_MS = 50.0
ROUNDS = ("bare", "webhook", "webhook+processor")
PATH = "/whatsapp/webhook"
APP_SECRET = "bench-app-secret"
WORDS = ("halo", "menu", "bantuan", "info", "daftar", "terima kasih")


# --- the server process ---------------------------------------------------------------


class _DroppedReplies:
    """The processor's reply sink: rendering and sending are the outbound side's cost."""

    def __init__(self) -> None:
        self.deliveries = 0

    def submit(self, chat_id: str, handled: QueuedReplies, update_id: str) -> None:
        self.deliveries += 1

    async def send_now(
        self, chat_id: str, replies: Sequence[Reply], language: Language, update_id: str
    ) -> None:
        self.deliveries += 1


class _NoMedia:
    async def fetch(self, media_id: str, max_bytes: int) -> bytes | None:
        raise RuntimeError("no media in this benchmark")


def serve(round_name: str, data_dir: str, pipe: Connection, processor: dict[str, Any]) -> None:
    """Child process: run one round's server until the parent says "stop", then report."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(round_name, Path(data_dir), pipe, processor))


async def _serve(
    round_name: str, data_dir: Path, pipe: Connection, processor_options: dict[str, Any]
) -> None:
    from bot.app import build_runtime
    from bot.settings import AppSettings, DatabaseSettings, Settings, WhatsAppSettings
    from bot.whatsapp.processor import InboundProcessor, ProcessorSettings
    from bot.whatsapp.webhook import WhatsAppWebhook
    from storage.crypto import generate_key
    from storage.dead_letters import DeadLetters
    from storage.models import WhatsappInbound

    settings = Settings(
        app=AppSettings(data_dir=data_dir, nik_key=SecretStr(generate_key())),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{data_dir / 'bench.sqlite3'}"),
        whatsapp=WhatsAppSettings(
            app_secret=SecretStr(APP_SECRET), verify_token=SecretStr("bench-verify")
        ),
    )
    runtime = await build_runtime(settings, migrate=True)
    app = web.Application()
    stop = asyncio.Event()
    processor_task: asyncio.Task[None] | None = None
    sink = _DroppedReplies()
    if round_name == "bare":

        async def bare(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=200)

        app.router.add_post(PATH, bare)
    else:
        processor = InboundProcessor(
            database=runtime.db,
            engine=runtime.engine,
            cipher=runtime.cipher,
            replies=sink,
            media=_NoMedia(),
            parking=DeadLetters(runtime.sessionmaker, runtime.cipher),
            catalogs=runtime.catalogs,
            clock=runtime.clock,
            settings=dataclasses.replace(
                ProcessorSettings.from_settings(settings.whatsapp), **processor_options
            ),
        )
        wake = processor.wake if round_name == "webhook+processor" else None
        WhatsAppWebhook(
            settings.whatsapp, runtime.db, runtime.cipher, runtime.clock, wake=wake
        ).routes(app)
        if wake is not None:
            processor_task = asyncio.create_task(processor.run(stop))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    gc.freeze()  # as `sertakan run` does after start-up
    cpu_start = time.process_time()
    pipe.send(port)
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
    drained_s = 0.0
    if processor_task is not None:
        started = time.perf_counter()
        deadline = started + 120
        while time.perf_counter() < deadline:
            if not await _pending(runtime.db, WhatsappInbound):
                break
            await asyncio.sleep(0.05)
        drained_s = time.perf_counter() - started
        stop.set()
        await processor_task
    cpu_s = time.process_time() - cpu_start
    await runner.cleanup()
    report: dict[str, Any] = {"server_cpu_s": cpu_s, "drained_after_load_s": drained_s}
    if round_name != "bare":
        async with runtime.db.connect() as connection:
            report["journal_rows"] = int(
                await connection.scalar(select(func.count()).select_from(WhatsappInbound)) or 0
            )
        report["unprocessed"] = await _pending(runtime.db, WhatsappInbound)
        report["reply_deliveries"] = sink.deliveries
    await runtime.close()
    pipe.send(report)


async def _pending(db: Any, table: Any) -> int:
    async with db.connect() as connection:
        count = await connection.scalar(
            select(func.count()).select_from(table).where(table.processed_at.is_(None))
        )
    return int(count or 0)


# --- the load generator -----------------------------------------------------------------


@dataclass(slots=True)
class Request:
    body: bytes
    signature: str
    message_id: str
    duplicate: bool


def build_requests(total: int, senders: int, duplicates: float, seed: int = 5) -> list[Request]:
    """Signed webhook bodies; a share of them copies of an earlier body (same wamid)."""
    from tests.fakes import whatsapp_payloads as wa

    rng = random.Random(seed)
    people = [
        wa.WaUser(
            wa_id=f"62812{number:08d}",
            user_id=f"ID.{7_000_000_000_000 + number}",
            name=f"Pengguna {number}",
        )
        for number in range(senders)
    ]
    requests: list[Request] = []
    for index in range(total):
        if requests and rng.random() < duplicates:
            original = requests[rng.randrange(len(requests))]
            requests.append(Request(original.body, original.signature, original.message_id, True))
            continue
        incoming = wa.text(people[index % senders], rng.choice(WORDS))
        body = wa.encode(wa.webhook(incoming))
        requests.append(Request(body, wa.sign(body, APP_SECRET), incoming.id, False))
    return requests


async def load(port: int, requests: list[Request], rate: float) -> dict[str, Any]:
    """Send `requests` at `rate` per second (open loop); latency from each scheduled time."""
    url = f"http://127.0.0.1:{port}{PATH}"
    latencies: list[float] = [0.0] * len(requests)
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(index: int, scheduled: float) -> None:
            request = requests[index]
            headers = {"Content-Type": "application/json", "X-Hub-Signature-256": request.signature}
            try:
                async with session.post(url, data=request.body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError:
                status = -1
            latencies[index] = time.perf_counter() - scheduled
            statuses[status] = statuses.get(status, 0) + 1

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.2
        for index in range(len(requests)):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(index, scheduled)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    ordered = sorted(latencies)

    def percentile(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    return {
        "requests": len(requests),
        "achieved_rate": len(requests) / wall,
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "max_ms": ordered[-1] * 1000,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def run_round(
    round_name: str, requests: list[Request], rate: float, processor: dict[str, Any]
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    with tempfile.TemporaryDirectory(prefix="bench_wa_") as data_dir:
        process = context.Process(target=serve, args=(round_name, data_dir, child, processor))
        process.start()
        try:
            port = parent.recv()
            result = asyncio.run(load(port, requests, rate))
            parent.send("stop")
            result.update(parent.recv())
        finally:
            process.join(timeout=180)
            if process.is_alive():
                process.kill()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per round")
    parser.add_argument("--senders", type=int, default=2000, help="distinct WhatsApp users")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of re-sent bodies")
    parser.add_argument("--rounds", default=",".join(ROUNDS), help="comma-separated rounds")
    parser.add_argument(
        "--engine-concurrency", type=int, default=None, help="processor's engine steps at once"
    )
    parser.add_argument("--batch", type=int, default=None, help="journal rows claimed at once")
    args = parser.parse_args()
    rounds = [name for name in args.rounds.split(",") if name]
    unknown = [name for name in rounds if name not in ROUNDS]
    if unknown:
        parser.error(f"unknown rounds: {unknown}; choose from {ROUNDS}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    total = int(args.rate * args.duration)
    requests = build_requests(total, args.senders, args.duplicates)
    unique = len({r.message_id for r in requests})
    print(
        f"bench_whatsapp_webhook: {total} requests at {args.rate:g}/s for {args.duration:g} s "
        f"per round, {args.senders} senders, {total - unique} duplicates; "
        f"rounds: {', '.join(rounds)}",
        flush=True,
    )
    processor: dict[str, Any] = {}
    if args.engine_concurrency is not None:
        processor["engine_concurrency"] = args.engine_concurrency
    if args.batch is not None:
        processor["batch_size"] = args.batch
    results: dict[str, dict[str, Any]] = {}
    broken = False
    for name in rounds:
        result = run_round(name, requests, args.rate, processor)
        results[name] = result
        problems = []
        if result["statuses"] != {"200": total}:
            problems.append(f"answers {result['statuses']}")
        if name != "bare" and result.get("journal_rows") != unique:
            problems.append(f"{result.get('journal_rows')} journal rows for {unique} messages")
        if name == "webhook+processor" and result.get("unprocessed"):
            problems.append(f"{result['unprocessed']} messages left unprocessed")
        broken = broken or bool(problems)
        verdict = "MET" if result["p99_ms"] <= TARGET_P99_MS else "MISS"
        if name == "bare":
            verdict = "baseline"
        print(
            f"{name:>18}: p50 {result['p50_ms']:6.2f} ms  p95 {result['p95_ms']:6.2f} ms  "
            f"p99 {result['p99_ms']:6.2f} ms  max {result['max_ms']:7.2f} ms  "
            f"at {result['achieved_rate']:.1f} req/s, server CPU {result['server_cpu_s']:.1f} s"
            + (
                f", drained {result['drained_after_load_s']:.2f} s after the load"
                if name == "webhook+processor"
                else ""
            )
            + f" -> {verdict}"
            + (f" BROKEN: {'; '.join(problems)}" if problems else ""),
            flush=True,
        )
    if "bare" in results:
        base = results["bare"]["p99_ms"]
        for name in rounds:
            if name != "bare":
                print(f"{name}: p99 = {results[name]['p99_ms'] / base:.1f} x the bare handler's")
    print(
        json.dumps(
            {
                "rate": args.rate,
                "duration_s": args.duration,
                "senders": args.senders,
                "duplicates": total - unique,
                "target_p99_ms": TARGET_P99_MS,
                "processor_options": processor,
                "rounds": results,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
