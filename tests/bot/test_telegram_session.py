"""TelegramSession over HTTP to the fake Bot API: answers the program does not read are not
built into aiogram types, and refusals still raise exactly as aiogram's own session does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import ClientDecodeError, TelegramForbiddenError, TelegramRetryAfter
from aiogram.methods import SendMessage
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.telegram import TelegramSession, UnreadSendMessage
from tests.fakes.telegram_api import FakeTelegramServer

CHAT = 5512345678


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
async def bot(server: FakeTelegramServer) -> AsyncIterator[Bot]:
    session = TelegramSession(api=TelegramAPIServer.from_base(server.base_url))
    bot = Bot(token=server.token, session=session, default=DefaultBotProperties(parse_mode=None))
    yield bot
    await bot.session.close()


KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="Ya", callback_data="g:yes")]]
)


async def test_an_unread_message_is_delivered_and_its_answer_not_built(
    server: FakeTelegramServer, bot: Bot
) -> None:
    result = await bot(UnreadSendMessage(chat_id=CHAT, text="Halo", reply_markup=KEYBOARD))

    assert result is None
    [sent] = server.messages_to(CHAT)
    assert sent.text == "Halo"
    assert sent.callback_data == ["g:yes"]


async def test_a_plain_send_message_still_returns_the_message(
    server: FakeTelegramServer, bot: Bot
) -> None:
    result = await bot(SendMessage(chat_id=CHAT, text="Halo", reply_markup=KEYBOARD))

    assert isinstance(result, Message)
    assert isinstance(result.reply_markup, InlineKeyboardMarkup)
    assert result.reply_markup.inline_keyboard[0][0].callback_data == "g:yes"
    assert result.message_id == server.messages_to(CHAT)[0].message_id


async def test_an_unread_message_refused_raises_as_aiogram_does(
    server: FakeTelegramServer, bot: Bot
) -> None:
    server.block_chat(CHAT)
    with pytest.raises(TelegramForbiddenError):
        await bot(UnreadSendMessage(chat_id=CHAT, text="Halo"))
    server.fail_next("sendMessage", status=429, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as refused:
        await bot(UnreadSendMessage(chat_id=CHAT + 1, text="Halo"))
    assert refused.value.retry_after == 7


async def test_an_answer_that_is_not_json_is_a_decode_error(bot: Bot) -> None:
    session = bot.session
    with pytest.raises(ClientDecodeError):
        session.check_response(
            bot, UnreadSendMessage(chat_id=CHAT, text="Halo"), 200, "<html>502</html>"
        )
