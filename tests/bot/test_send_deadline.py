"""A send is written only if its connection is ready by its deadline (bot/send_deadline.py):
found with the province proof, where sends that had to open a connection on a busy loop went
out 75-134 ms after their places in the send budget, together, over Telegram's limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.delivery import ReplyDelivery
from bot.send_deadline import OnTimeConnector
from bot.settings import DispatcherSettings
from bot.telegram import TelegramReplies, TelegramSender, TelegramSession, UnreadSendMessage
from bot.whatsapp.client import WhatsAppClient
from bot.whatsapp.render import TextMessage, WhatsAppReplies
from domain.vocabulary import Channel, Language, OutboxStatus
from handlers.i18n import Catalogs
from handlers.types import Reply
from scheduler.dispatcher import Dispatcher
from scheduler.sending import PlaceMissed, Sent, write_by
from storage.models import Outbox
from storage.outbox import Notice, enqueue
from storage.send_budget import ChannelRate, LocalSendBudget, SendBudget, Take
from tests.fakes.clock import FrozenClock
from tests.fakes.graph_api import FakeGraphServer
from tests.fakes.telegram_api import FakeTelegramServer

CHAT = 5512345678
#: How long opening a connection takes here: a busy event loop's few turns.
SLOW_CONNECT_S = 0.1


class SlowConnector(OnTimeConnector):
    """Opens each connection `SLOW_CONNECT_S` late, and counts them."""

    opened = 0

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        type(self).opened += 1
        await asyncio.sleep(SLOW_CONNECT_S)
        return await super()._create_connection(*args, **kwargs)


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
async def bot(server: FakeTelegramServer) -> AsyncIterator[Bot]:
    SlowConnector.opened = 0
    session = TelegramSession(api=TelegramAPIServer.from_base(server.base_url))
    session._connector_type = SlowConnector
    bot = Bot(token=server.token, session=session, default=DefaultBotProperties(parse_mode=None))
    yield bot
    await bot.session.close()


def test_the_telegram_session_opens_its_connections_through_the_on_time_connector() -> None:
    assert TelegramSession()._connector_type is OnTimeConnector


async def test_a_send_whose_connection_comes_after_its_deadline_is_not_written(
    server: FakeTelegramServer, bot: Bot
) -> None:
    with pytest.raises(PlaceMissed) as missed, write_by(time.monotonic() + 0.02):
        await bot(UnreadSendMessage(chat_id=CHAT, text="Halo"))

    assert missed.value.late_s > 0
    assert server.messages_to(CHAT) == []
    # The connection went back to the pool: the next send is written on it, at once.
    with write_by(time.monotonic() + 0.02):
        await bot(UnreadSendMessage(chat_id=CHAT, text="Halo"))
    assert [m.text for m in server.messages_to(CHAT)] == ["Halo"]
    assert SlowConnector.opened == 1


async def test_a_send_without_a_deadline_or_in_time_is_written(
    server: FakeTelegramServer, bot: Bot
) -> None:
    await bot(UnreadSendMessage(chat_id=CHAT, text="Satu"))
    with write_by(time.monotonic() + 5.0):
        await bot(UnreadSendMessage(chat_id=CHAT, text="Dua"))

    assert [m.text for m in server.messages_to(CHAT)] == ["Satu", "Dua"]


class CountingBudget(LocalSendBudget):
    def __init__(self) -> None:
        super().__init__(
            {Channel.TELEGRAM: ChannelRate(per_second=1000.0, recipient_interval_s=1.0)}
        )
        self.takes = 0

    async def take(self, channel: Channel, **kwargs: Any) -> Take:
        self.takes += 1
        return await super().take(channel, **kwargs)


async def reply_halo(bot: Bot, budget: SendBudget | None) -> ReplyDelivery:
    """Reply "Halo" to CHAT through the Telegram transport, paced by `budget`."""
    replies = ReplyDelivery(
        TelegramReplies(bot, Catalogs(), timeout_s=5),
        database=None,
        cipher=None,
        clock=FrozenClock(),
        budget=budget,
    )
    try:
        await replies.send_now(str(CHAT), [Reply("Halo")], Language.INDONESIAN, "u1")
        await replies.idle()
    finally:
        await replies.close()
    return replies


async def test_a_reply_whose_connection_came_late_takes_a_new_place_and_goes_once(
    server: FakeTelegramServer, bot: Bot
) -> None:
    budget = CountingBudget()
    replies = await reply_halo(bot, budget)

    assert [m.text for m in server.messages_to(CHAT)] == ["Halo"]
    assert replies.places_missed == 1
    assert budget.takes == 2  # its place, then a new one once the connection was there
    assert SlowConnector.opened == 1


async def test_a_reply_without_a_budget_is_never_stopped(
    server: FakeTelegramServer, bot: Bot
) -> None:
    replies = await reply_halo(bot, None)

    assert [m.text for m in server.messages_to(CHAT)] == ["Halo"]
    assert replies.places_missed == 0


async def test_the_connector_stops_any_aiohttp_request_after_its_deadline(
    server: FakeTelegramServer,
) -> None:
    async with aiohttp.ClientSession(connector=SlowConnector()) as http:
        url = f"{server.base_url}/bot{server.token}/getMe"
        with pytest.raises(PlaceMissed), write_by(time.monotonic()):
            await http.get(url)
        async with http.get(url) as response:
            assert response.status == 200


# --- WhatsApp: pywa over httpx over aiohttp ------------------------------------------------

WA_ID = "6281298765432"


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphServer]:
    async with FakeGraphServer() as fake:
        fake.open_window(WA_ID)
        yield fake


async def test_a_whatsapp_reply_past_its_deadline_is_not_written_and_its_retry_is(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    transport = WhatsAppReplies(wa_client, Catalogs())
    # A deadline passed already: even a connection opened at once comes after it.
    with pytest.raises(PlaceMissed), write_by(time.monotonic() - 1.0):
        await transport.send(WA_ID, TextMessage("Halo"))
    assert graph.messages_to(WA_ID) == []

    with write_by(time.monotonic() + 5.0):
        assert isinstance(await transport.send(WA_ID, TextMessage("Halo")), Sent)
    assert [m.text for m in graph.messages_to(WA_ID)] == ["Halo"]


async def test_only_the_first_request_of_a_block_is_held_to_its_deadline(
    server: FakeTelegramServer,
) -> None:
    """A notice of several messages took one place for its first: once that one is
    written, the rest go whatever the time (a stop there would send the first twice)."""
    async with aiohttp.ClientSession(connector=OnTimeConnector()) as http:
        url = f"{server.base_url}/bot{server.token}/getMe"
        with write_by(time.monotonic() - 1.0):
            with pytest.raises(PlaceMissed):
                await http.get(url)
            async with http.get(url) as response:
                assert response.status == 200


# --- the outbox dispatcher ------------------------------------------------------------------


async def test_a_notice_whose_connection_came_late_takes_a_new_place_and_is_sent_once(
    db_engine: AsyncEngine, server: FakeTelegramServer, bot: Bot
) -> None:
    morning = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)  # 09:00 in Jakarta: no quiet hours
    async with db_engine.begin() as connection:
        await enqueue(
            connection,
            Notice(
                dedupe_key="card:1",
                channel=Channel.TELEGRAM,
                recipient=str(CHAT),
                kind="card_ready",
                body="Kartu Anda sudah jadi.",
            ),
            now=morning,
        )
    sending = Dispatcher(
        db_engine,
        {Channel.TELEGRAM: TelegramSender(bot)},
        lambda: morning,
        DispatcherSettings(telegram_rate_per_s=100.0),  # a lookahead of 50 ms
        ZoneInfo("Asia/Jakarta"),
    )

    assert await sending.tick() == 1

    assert [m.text for m in server.messages_to(CHAT)] == ["Kartu Anda sudah jadi."]
    assert sending.places_missed == 1
    assert SlowConnector.opened == 1
    async with db_engine.connect() as connection:
        row = (await connection.execute(select(Outbox.status, Outbox.attempts))).one()
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 1)
