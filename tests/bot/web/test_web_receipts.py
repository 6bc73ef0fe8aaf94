"""Receipts fetched from Telegram for the payments page, over the fake Bot API (issue 13)."""

from __future__ import annotations

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.web.receipts import TelegramReceipts
from tests.fakes.telegram_api import FakeTelegramServer

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


async def test_a_receipt_is_fetched_by_its_file_id_and_an_unknown_one_is_none() -> None:
    async with FakeTelegramServer() as server:
        server.add_file("AgACAgUAAxkBAAIKPL", "photo.jpg", JPEG)
        session = AiohttpSession(api=TelegramAPIServer.from_base(server.base_url))
        bot = Bot(server.token, session=session)
        try:
            receipts = TelegramReceipts(bot)
            assert await receipts.fetch("telegram", "AgACAgUAAxkBAAIKPL") == (JPEG, "image/jpeg")
            assert await receipts.fetch("telegram", "no-such-file") is None
            # Another channel's reference means nothing to Telegram: not even asked.
            calls = len(server.calls)
            assert await receipts.fetch("whatsapp", "AgACAgUAAxkBAAIKPL") is None
            assert len(server.calls) == calls
        finally:
            await session.close()
