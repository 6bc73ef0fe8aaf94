"""Several dispatchers, each with its own engine and connection pool as separate processes
would have, and a stream of conversation replies, drain one backlog to the enforcing fake
Bot API and fake Graph API through one send budget (PostgreSQL: shared rows; SQLite: one
dispatcher with the budget in memory).

Real time, real HTTP: the fakes' flood control is the judge (a send over the rate in any
sliding second, or to a chat within its interval, is refused and counted).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from datetime import time as wall_time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.dispatch_run import busiest_second
from bot.delivery import ReplyDelivery
from bot.settings import DispatcherSettings
from bot.telegram import TelegramReplies, TelegramSender
from bot.whatsapp.client import build_client
from bot.whatsapp.sender import WhatsAppSender
from bot.whatsapp.templates import TemplateBook
from domain.vocabulary import Channel, Language, OutboxStatus
from handlers.i18n import Catalogs
from handlers.types import QueuedReplies, Reply
from scheduler.dispatcher import Dispatcher, budget_rates
from scheduler.sending import RetryAfter
from storage.db import create_engine
from storage.outbox import Notice, counts_by_status, enqueue
from storage.send_budget import SendBudget, send_budget
from tests.fakes.serve import RemoteGraphServer, RemoteTelegramServer
from tests.scheduler.test_dispatcher import StartRecorder

WIB = ZoneInfo("Asia/Jakarta")
FIRST_CHAT = 7_100_000_000
FIRST_WA = 6281500000000
#: Replies go to chats of their own: a notice and a reply to one chat within a second
#: would be the conversation's business, not the budget's.
FIRST_REPLY_CHAT = 7_200_000_000
TELEGRAM_RATE = 20
WHATSAPP_RATE = 20
#: Short intervals keep the test short; the budget treats 1 s and 6 s alike.
CHAT_INTERVAL_S = 1.0
PAIR_INTERVAL_S = 1.5
CARD = {"name": "Siti Aminah", "kpj": "12345678901", "opd": "Dinas Sosial"}


def utc_now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def engines(db_engine: AsyncEngine, database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Three engines on PostgreSQL (three processes' pools); the one engine on SQLite."""
    if db_engine.dialect.name != "postgresql":
        yield [db_engine]
        return
    made = [create_engine(database_url) for _ in range(3)]
    yield made
    for engine in made:
        await engine.dispose()


async def backlog(db: AsyncEngine, telegram: Sequence[int], whatsapp: Sequence[int]) -> int:
    now = utc_now()
    async with db.begin() as connection:
        for number, chat in enumerate(telegram):
            await enqueue(
                connection,
                Notice(
                    dedupe_key=f"tg:{number}",
                    channel=Channel.TELEGRAM,
                    recipient=str(chat),
                    kind="card_ready",
                    body=f"Pesan {number} untuk {chat}",
                ),
                now=now,
            )
        for number, wa_id in enumerate(whatsapp):
            await enqueue(
                connection,
                Notice(
                    dedupe_key=f"wa:{number}",
                    channel=Channel.WHATSAPP,
                    recipient=str(wa_id),
                    kind="card_ready",
                    body=f"Kartu {number}",
                    template="card_ready_worker",
                    params=CARD,
                ),
                now=now,
            )
    return len(telegram) + len(whatsapp)


async def all_done(db: AsyncEngine, rows: int) -> None:
    while True:
        async with db.connect() as connection:
            counts = await counts_by_status(connection)
        if counts[OutboxStatus.SENT] + counts[OutboxStatus.FAILED] >= rows:
            return
        await asyncio.sleep(0.1)


def spacing_held(times_by_recipient: dict[Any, list[float]], interval: float) -> bool:
    return all(
        later - earlier >= interval
        for times in times_by_recipient.values()
        for earlier, later in zip(sorted(times), sorted(times)[1:], strict=False)
    )


async def test_dispatchers_and_replies_share_one_budget_without_a_refusal(
    engines: list[AsyncEngine], book: TemplateBook
) -> None:
    # 60 chats, 20 of them with a second notice; 40 WhatsApp recipients, 15 with two.
    telegram = [FIRST_CHAT + n for n in range(60)] + [FIRST_CHAT + n for n in range(20)]
    whatsapp = [FIRST_WA + n for n in range(40)] + [FIRST_WA + n for n in range(15)]
    rows = await backlog(engines[0], telegram, whatsapp)
    settings = DispatcherSettings(
        telegram_rate_per_s=TELEGRAM_RATE,
        telegram_chat_interval_s=CHAT_INTERVAL_S,
        whatsapp_rate_per_s=WHATSAPP_RATE,
        whatsapp_chat_interval_s=PAIR_INTERVAL_S,
        batch_size=30,
        idle_s=0.05,
        # A wider margin than the default 4 %: the test shares 2 cores with whole suites
        # (load 8 seen), where a send may reach the fake 50 ms late, bunching with the next.
        # The default margin is measured in bench/ (docs/BENCHMARKS.md).
        rate_margin=0.1,
        quiet_start=wall_time(0, 0),
        quiet_end=wall_time(0, 0),
    )
    # The fakes in processes of their own: on the test's loop, which also runs the
    # dispatchers, a request is stamped when that loop gets to it, and sends spaced
    # correctly but read late in a bunch would be refused as over the rate.
    async with RemoteTelegramServer() as server, RemoteGraphServer() as graph:
        await server.control(
            "enforce_rates", per_second=TELEGRAM_RATE, chat_interval_s=CHAT_INTERVAL_S
        )
        await graph.control(
            "enforce_rates", per_second=WHATSAPP_RATE, pair_interval_s=PAIR_INTERVAL_S
        )
        for fake in (server, graph):  # a round trip of 100 ms
            await fake.control("answer_delay", 0.1)
        budgets: list[SendBudget] = [send_budget(e, budget_rates(settings)) for e in engines]
        bots = [
            Bot(
                token=server.token,
                session=AiohttpSession(api=TelegramAPIServer.from_base(server.base_url)),
                default=DefaultBotProperties(parse_mode=None),
            )
            for _ in engines
        ]
        clients = [build_client(graph.settings()) for _ in engines]
        dispatchers = [
            Dispatcher(
                engine,
                {
                    Channel.TELEGRAM: TelegramSender(bot),
                    Channel.WHATSAPP: WhatsAppSender(
                        client, book, clock=utc_now, chunk_interval_s=PAIR_INTERVAL_S
                    ),
                },
                utc_now,
                settings,
                WIB,
                budget=budget,
            )
            for engine, bot, client, budget in zip(engines, bots, clients, budgets, strict=True)
        ]
        # The conversation's replies of the last process draw on the same budget.
        replies = ReplyDelivery(
            TelegramReplies(bots[-1], Catalogs(), timeout_s=5),
            database=None,
            cipher=None,
            clock=utc_now,
            budget=budgets[-1],
        )
        stop = asyncio.Event()
        running = [asyncio.create_task(dispatcher.run(stop)) for dispatcher in dispatchers]
        try:
            for number in range(20):
                await asyncio.sleep(0.1)
                replies.submit(
                    str(FIRST_REPLY_CHAT + number),
                    QueuedReplies([Reply(f"Jawaban {number}")], Language.INDONESIAN),
                    f"update-{number}",
                )
            await asyncio.wait_for(all_done(engines[0], rows), 60)
            await asyncio.wait_for(replies.drain(), 10)
        finally:
            stop.set()
            await asyncio.gather(*running)
            await replies.close()
            for bot in bots:
                await bot.session.close()
            for client in clients:
                await client.close()
            for budget in budgets:
                await budget.close()
        # The mirrors hold everything the fakes saw.
        await server.synced()
        await graph.synced()

        async with engines[0].connect() as connection:
            counts = await counts_by_status(connection)
        assert counts[OutboxStatus.SENT] == rows

        # No refusal: neither the rate in any sliding second nor a chat's interval.
        assert server.too_many_requests == 0
        assert graph.errors == {}
        # Every notice exactly once, every reply once.
        notices = [m for m in server.sent if m.chat_id < FIRST_REPLY_CHAT]
        assert collections.Counter(m.chat_id for m in notices) == collections.Counter(telegram)
        assert sorted(m.chat_id for m in server.sent if m.chat_id >= FIRST_REPLY_CHAT) == [
            FIRST_REPLY_CHAT + n for n in range(20)
        ]
        assert collections.Counter(int(m.to) for m in graph.sent) == collections.Counter(whatsapp)
        # Per recipient, the interval held (the fakes refuse otherwise; checked here too).
        by_chat: dict[Any, list[float]] = collections.defaultdict(list)
        for message in notices:
            by_chat[message.chat_id].append(message.at)
        assert spacing_held(by_chat, CHAT_INTERVAL_S)
        by_wa: dict[Any, list[float]] = collections.defaultdict(list)
        for wa in graph.sent:
            by_wa[wa.to].append(wa.at)
        assert spacing_held(by_wa, PAIR_INTERVAL_S)
        # Under the cap, and near it: the processes together filled a second close to the
        # rate, so none of them kept to a share of its own (a count, not a duration: on a
        # loaded machine the spread of sends widens, their number in one second stays).
        telegram_peak = busiest_second([m.at for m in server.sent])
        whatsapp_peak = busiest_second([m.at for m in graph.sent])
        assert 0.75 * TELEGRAM_RATE <= telegram_peak <= TELEGRAM_RATE
        assert 0.75 * WHATSAPP_RATE <= whatsapp_peak <= WHATSAPP_RATE


async def test_a_429_to_one_process_holds_every_process_for_its_retry_after(
    engines: list[AsyncEngine],
) -> None:
    """One dispatcher's 429 pauses the channel in the shared budget: another dispatcher
    (its own engine, as another process) with rows of its own, due now, starts none of
    them before the retry_after is over."""
    if len(engines) < 2:
        pytest.skip("several processes share the budget on PostgreSQL only")
    retry_after = 2.0
    settings = DispatcherSettings(
        telegram_rate_per_s=TELEGRAM_RATE,
        quiet_start=wall_time(0, 0),
        quiet_end=wall_time(0, 0),
    )

    async def due_now(chats: Sequence[int], prefix: str) -> None:
        async with engines[0].begin() as connection:
            for chat in chats:
                notice = Notice(
                    dedupe_key=f"{prefix}:{chat}",
                    channel=Channel.TELEGRAM,
                    recipient=str(chat),
                    kind="card_ready",
                    body=f"Pesan untuk {chat}",
                )
                await enqueue(connection, notice, now=utc_now())

    budgets: list[SendBudget] = []

    def dispatcher(engine: AsyncEngine, sender: StartRecorder) -> Dispatcher:
        budget = send_budget(engine, budget_rates(settings))
        budgets.append(budget)
        return Dispatcher(engine, {Channel.TELEGRAM: sender}, utc_now, settings, WIB, budget=budget)

    # Stamped by the wall clock, as PostgreSQL's.
    refused = StartRecorder(time.time, RetryAfter(retry_after, "Too Many Requests: retry after 2"))
    try:
        await due_now([FIRST_CHAT], "first")
        assert await dispatcher(engines[0], refused).tick() == 1
        others = [FIRST_CHAT + 1 + n for n in range(3)]
        await due_now(others, "second")
        waiting = StartRecorder(time.time)
        second = dispatcher(engines[1], waiting)
        async with asyncio.timeout(60):
            while len(waiting.started) < len(others):
                await second.tick()
                await asyncio.sleep(0.1)
    finally:
        for budget in budgets:
            await budget.close()

    # Rows due at once, yet the other process sent nothing before the pause was over (it
    # counts from PostgreSQL's clock once the 429 came back, after the refused send began).
    assert min(at for at, _ in waiting.started) >= refused.started[0][0] + retry_after - 0.01
