"""TelegramSender over HTTP to the fake Bot API: every platform answer becomes a SendResult."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.telegram import TelegramSender
from domain.vocabulary import Channel
from handlers.splitting import split_text
from scheduler.sending import OutgoingNotice, Permanent, RetryAfter, Sender, Sent, Transient
from tests.fakes.telegram_api import FakeTelegramServer

CHAT = 5512345678


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


def make_bot(server: FakeTelegramServer, token: str | None = None) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(server.base_url))
    return Bot(
        token=token or server.token,
        session=session,
        default=DefaultBotProperties(parse_mode=None),
    )


@pytest.fixture
async def bot(server: FakeTelegramServer) -> AsyncIterator[Bot]:
    bot = make_bot(server)
    yield bot
    await bot.session.close()


def notice(
    body: str = "Kartu <b>KPJ</b> siap & bisa diambil", recipient: str = str(CHAT)
) -> OutgoingNotice:
    return OutgoingNotice(
        outbox_id=1,
        channel=Channel.TELEGRAM,
        recipient=recipient,
        kind="card_ready",
        body=body,
        template=None,
        params={},
    )


def test_it_is_a_sender_for_telegram(bot: Bot) -> None:
    sender: Sender = TelegramSender(bot)
    assert sender.channel is Channel.TELEGRAM


async def test_a_notice_goes_out_as_plain_text(server: FakeTelegramServer, bot: Bot) -> None:
    result = await TelegramSender(bot).send(notice())

    assert result == Sent()
    [message] = server.messages_to(CHAT)
    assert message.text == "Kartu <b>KPJ</b> siap & bisa diambil"
    assert (message.parse_mode, message.reply_markup) == (None, None)


async def test_a_long_notice_is_split_and_spaced_one_second_apart(
    server: FakeTelegramServer, bot: Bot
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    body = "\n".join(f"{n:03d} " + "x" * 95 for n in range(60))  # 6,000 characters
    sender = TelegramSender(bot, sleep=sleep)
    long = notice(body)

    assert sender.message_count(long) == 2
    assert sender.message_count(notice()) == 1
    assert await sender.send(long) == Sent()
    assert [m.text for m in server.messages_to(CHAT)] == split_text(body, 4096)
    assert slept == [1.0]


async def test_flood_control_becomes_retry_after(server: FakeTelegramServer, bot: Bot) -> None:
    server.fail_next("sendMessage", status=429, retry_after=7)

    result = await TelegramSender(bot).send(notice())

    assert isinstance(result, RetryAfter)
    assert result.seconds == 7
    assert "retry after 7" in result.error
    assert server.messages_to(CHAT) == []


async def test_a_person_who_blocked_the_bot_is_a_permanent_failure(
    server: FakeTelegramServer, bot: Bot
) -> None:
    server.block_chat(CHAT)

    result = await TelegramSender(bot).send(notice())

    assert isinstance(result, Permanent)
    assert "bot was blocked by the user" in result.error


async def test_an_unknown_chat_is_a_permanent_failure(server: FakeTelegramServer, bot: Bot) -> None:
    server.forget_chat(CHAT)

    result = await TelegramSender(bot).send(notice())

    assert isinstance(result, Permanent)
    assert "chat not found" in result.error


@pytest.mark.parametrize("network", [False, True])
async def test_server_and_network_errors_are_transient(
    server: FakeTelegramServer, bot: Bot, network: bool
) -> None:
    server.fail_next("sendMessage", network=network)

    result = await TelegramSender(bot).send(notice())

    assert isinstance(result, Transient)
    assert server.token not in result.error
    assert await TelegramSender(bot).send(notice()) == Sent()  # the next try goes through


async def test_an_unreachable_server_is_transient_and_never_quotes_the_token(
    server: FakeTelegramServer,
) -> None:
    token = server.token
    await server.close()
    bot = make_bot(server, token)
    try:
        result = await TelegramSender(bot).send(notice())
    finally:
        await bot.session.close()

    assert isinstance(result, Transient)
    assert token not in result.error


async def test_a_rejected_token_is_transient_until_it_is_fixed(server: FakeTelegramServer) -> None:
    bot = make_bot(server, "999:wrong-token")
    try:
        result = await TelegramSender(bot).send(notice())
    finally:
        await bot.session.close()

    assert isinstance(result, Transient)
    assert "Unauthorized" in result.error


@pytest.mark.parametrize(("body", "recipient"), [("   ", str(CHAT)), ("Halo", "asn-console")])
async def test_notices_telegram_cannot_take_fail_without_a_call(
    server: FakeTelegramServer, bot: Bot, body: str, recipient: str
) -> None:
    result = await TelegramSender(bot).send(notice(body, recipient))

    assert isinstance(result, Permanent)
    assert server.calls_of("sendMessage") == []
