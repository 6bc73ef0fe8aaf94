"""Receipts fetched for the payments page: from Telegram over the fake Bot API, from
WhatsApp over the fake Graph API (issue 13)."""

from __future__ import annotations

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.web.app import MAX_RECEIPT_BYTES, ReceiptProblem
from bot.web.receipts import ChannelReceipts, TelegramReceipts
from bot.whatsapp.client import WhatsAppClient, build_client
from bot.whatsapp.receipts import WhatsAppReceipts
from tests.fakes.graph_api import FakeGraphServer
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
            assert await receipts.fetch("telegram", "no-such-file") is ReceiptProblem.GONE
            # Another channel's reference means nothing to Telegram: not even asked.
            calls = len(server.calls)
            assert await receipts.fetch("whatsapp", "AgACAgUAAxkBAAIKPL") is None
            assert len(server.calls) == calls
        finally:
            await session.close()


async def test_a_whatsapp_receipt_is_fetched_by_its_media_id_over_the_graph_api(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    media_id = graph.add_media(JPEG, "image/jpeg")
    receipts = WhatsAppReceipts(wa_client)
    assert await receipts.fetch("whatsapp", media_id) == (JPEG, "image/jpeg")
    assert [call.path for call in graph.calls] == [
        f"/v{graph.api_version}/{media_id}",
        f"/download/{media_id}",
    ]
    # A Telegram file id means nothing to the Graph API: not even asked.
    assert await receipts.fetch("telegram", media_id) is None
    assert len(graph.calls) == 2


async def test_an_expired_or_too_large_whatsapp_receipt_says_why(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    receipts = WhatsAppReceipts(wa_client)
    deleted = graph.add_media(JPEG, "image/jpeg")
    graph.expire_media(deleted)
    assert await receipts.fetch("whatsapp", deleted) is ReceiptProblem.GONE
    url_gone = graph.add_media(JPEG, "image/jpeg")
    graph.expire_media(url_gone, url_only=True)
    assert await receipts.fetch("whatsapp", url_gone) is ReceiptProblem.GONE
    huge = graph.add_media(b"\x00" * (MAX_RECEIPT_BYTES + 1), "application/pdf")
    assert await receipts.fetch("whatsapp", huge) is ReceiptProblem.TOO_LARGE
    # The size was declared: the download was never started.
    assert not graph.calls_to(f"/download/{huge}")


async def test_a_graph_api_out_of_reach_makes_the_receipt_unavailable(
    graph: FakeGraphServer,
) -> None:
    media_id = graph.add_media(JPEG, "image/jpeg")
    nowhere = build_client(graph.settings(api_base="http://127.0.0.1:9"))
    try:
        receipts = WhatsAppReceipts(nowhere)
        assert await receipts.fetch("whatsapp", media_id) is ReceiptProblem.UNAVAILABLE
    finally:
        await nowhere.close()


async def test_each_channel_s_receipt_goes_to_its_own_source(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    media_id = graph.add_media(JPEG, "image/jpeg")
    receipts = ChannelReceipts({"whatsapp": WhatsAppReceipts(wa_client)})
    assert await receipts.fetch("whatsapp", media_id) == (JPEG, "image/jpeg")
    # No Telegram on this process: nothing to ask.
    assert await receipts.fetch("telegram", "AgACAgUAAxkBAAIKPL") is None
