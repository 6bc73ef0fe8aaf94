"""Documents over Telegram: downloaded before the engine runs, sent with sendDocument.

The engine here is a recording test double (the channel is under test); the
Bot API is the fake server over real HTTP, including the file download route.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram.methods import SendDocument, SendPhoto
from aiogram.types import InlineKeyboardMarkup, Update
from pydantic import SecretStr

from bot.delivery import DeliverySettings
from bot.settings import TelegramSettings
from bot.telegram import MAX_CAPTION_LENGTH, TelegramChannel, render_replies
from domain.vocabulary import Channel, Language
from handlers.i18n import Catalogs
from handlers.types import Document, EventKind, FileRef, InboundEvent, Option, QueuedReplies, Reply
from tests.fakes.clock import FrozenClock
from tests.fakes.telegram_api import FakeTelegramServer, ResentFile

NOW = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
PIC = 5512345678
XLSX = b"PK\x03\x04" + bytes(range(256)) * 40  # ~10 KB, with every byte value
_T_ID = Catalogs().translator(Language.INDONESIAN)


class RecordingEngine:
    """Test double for ConversationEngine: records events, answers with `answer(event)`."""

    def __init__(self, answer: Callable[[InboundEvent], Sequence[Reply]] | None = None) -> None:
        self.events: list[InboundEvent] = []
        self._answer = answer or (lambda event: [])

    async def handle(self, event: InboundEvent) -> Sequence[Reply]:
        self.events.append(event)
        return self._answer(event)

    async def handle_queued(self, event: InboundEvent) -> QueuedReplies:
        return QueuedReplies(await self.handle(event), Language.INDONESIAN)

    async def language_of(self, channel: Channel, sender_id: str) -> Language:
        return Language.INDONESIAN


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@contextlib.asynccontextmanager
async def open_channel(
    server: FakeTelegramServer, engine: RecordingEngine, **settings: Any
) -> AsyncIterator[TelegramChannel]:
    values: dict[str, Any] = {
        "token": SecretStr(server.token),
        "api_base": server.base_url,
        "polling_timeout_s": 1,
    }
    values.update(settings)
    channel = TelegramChannel(
        engine,
        TelegramSettings(**values),
        FrozenClock(NOW),
        retry_first_s=0.01,
        retry_cap_s=0.05,
        delivery=DeliverySettings(
            retry_first=timedelta(milliseconds=10), retry_cap=timedelta(milliseconds=50)
        ),
    )
    try:
        yield channel
        await asyncio.wait_for(channel.replies.drain(), 10)
    finally:
        await channel.close()


def update_of(server: FakeTelegramServer, payload: dict[str, Any]) -> Update:
    return Update.model_validate(payload)


# --- documents in -----------------------------------------------------------------


async def test_a_document_is_downloaded_before_the_engine_runs(server: FakeTelegramServer) -> None:
    document = server.add_file("BQACAgUAAxkBAAIBEWeDoc", "kpj_dinkes.xlsx", XLSX)
    engine = RecordingEngine()
    async with open_channel(server, engine) as channel:
        await channel.handle_update(update_of(server, server.document_update(PIC, document, "KPJ")))

    [event] = engine.events
    assert (event.kind, event.file_ref, event.file_name, event.text) == (
        EventKind.DOCUMENT,
        "BQACAgUAAxkBAAIBEWeDoc",
        "kpj_dinkes.xlsx",
        "KPJ",
    )
    assert event.file_content == XLSX
    assert event.file_too_large is False
    assert server.downloads() == [server.files["BQACAgUAAxkBAAIBEWeDoc"].file_path]


async def test_a_document_over_the_limit_is_not_downloaded(server: FakeTelegramServer) -> None:
    document = server.add_file("big", "semua.xlsx", XLSX)
    engine = RecordingEngine()
    async with open_channel(server, engine, max_file_bytes=len(XLSX) - 1) as channel:
        await channel.handle_update(update_of(server, server.document_update(PIC, document)))

    [event] = engine.events
    assert (event.file_too_large, event.file_content) == (True, None)
    assert server.calls_of("getFile") == []
    assert server.downloads() == []


async def test_without_a_size_in_the_update_getfile_decides(server: FakeTelegramServer) -> None:
    document = server.add_file("nosize", "semua.xlsx", XLSX)
    del document["file_size"]  # optional in the Bot API
    engine = RecordingEngine()
    async with open_channel(server, engine, max_file_bytes=len(XLSX) - 1) as channel:
        await channel.handle_update(update_of(server, server.document_update(PIC, document)))

    [event] = engine.events
    assert (event.file_too_large, event.file_content) == (True, None)
    assert len(server.calls_of("getFile")) == 1
    assert server.downloads() == []


async def test_a_file_over_the_bot_api_download_limit_is_too_large(
    server: FakeTelegramServer,
) -> None:
    """The Bot API refuses getFile over 20 MB ("file is too big")."""
    document = server.add_file("huge", "scan.pdf", b"x" * (20 * 1024 * 1024 + 1))
    del document["file_size"]
    engine = RecordingEngine()
    async with open_channel(server, engine, max_file_bytes=20 * 1024 * 1024) as channel:
        await channel.handle_update(update_of(server, server.document_update(PIC, document)))

    [event] = engine.events
    assert (event.file_too_large, event.file_content) == (True, None)
    assert server.downloads() == []


async def test_a_failed_download_is_retried_like_a_failed_engine(
    server: FakeTelegramServer,
) -> None:
    """The update is not confirmed until its document was fetched and handled."""
    document = server.add_file("doc", "kpj.csv", b"nik,kpj\n")
    engine = RecordingEngine()
    server.fail_next("getFile")
    pushed = server.push_update(server.document_update(PIC, document))
    async with open_channel(server, engine) as channel:
        stop = asyncio.Event()
        task = asyncio.create_task(channel.run_polling(stop))
        try:
            await server.wait_until(lambda: len(engine.events) == 1)
            await server.wait_until(lambda: server.confirmed_offset > pushed["update_id"])
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    assert len(server.calls_of("getFile")) == 2
    [event] = engine.events  # the engine saw the update once, with its bytes
    assert event.file_content == b"nik,kpj\n"


# --- documents out ----------------------------------------------------------------

EXPORT = Document("kolektif_dinkes_2026-01-05.xlsx", XLSX, "application/vnd.ms-excel")
BUTTONS = (Option("pic:export:done", "Tandai terkirim"),)


def test_a_short_text_becomes_the_caption_with_the_buttons() -> None:
    [message] = render_replies([Reply("Berkas kolektif", options=BUTTONS, document=EXPORT)], _T_ID)
    assert (message.document, message.text) == (EXPORT, "Berkas kolektif")
    assert isinstance(message.reply_markup, InlineKeyboardMarkup)


def test_a_text_over_the_caption_limit_follows_the_document() -> None:
    text = "x" * (MAX_CAPTION_LENGTH + 1)
    document, after = render_replies([Reply(text, options=BUTTONS, document=EXPORT)], _T_ID)
    assert (document.document, document.text, document.reply_markup) == (EXPORT, "", None)
    assert (after.document, after.text) == (None, text)
    assert isinstance(after.reply_markup, InlineKeyboardMarkup)


def test_a_document_without_text_is_still_sent() -> None:
    [message] = render_replies([Reply("", document=EXPORT)], _T_ID)
    assert (message.document, message.text) == (EXPORT, "")


async def test_a_reply_document_is_uploaded_with_its_caption(server: FakeTelegramServer) -> None:
    engine = RecordingEngine(
        lambda event: [Reply("Berkas kolektif 12 peserta", options=BUTTONS, document=EXPORT)]
    )
    async with open_channel(server, engine) as channel:
        await channel.handle_update(update_of(server, server.text_update(PIC, "/ekspor")))

    [sent] = server.documents
    assert (sent.chat_id, sent.file_name, sent.content) == (PIC, EXPORT.file_name, XLSX)
    assert sent.caption == "Berkas kolektif 12 peserta"
    assert sent.reply_markup is not None
    assert sent.reply_markup["inline_keyboard"][0][0]["callback_data"] == "pic:export:done"
    assert server.messages_to(PIC) == []


async def test_a_long_text_goes_out_after_the_document(server: FakeTelegramServer) -> None:
    text = "Ringkasan: " + "baris panjang " * 100  # over 1024 characters
    engine = RecordingEngine(lambda event: [Reply(text, options=BUTTONS, document=EXPORT)])
    async with open_channel(server, engine) as channel:
        await channel.handle_update(update_of(server, server.text_update(PIC, "/ekspor")))

    [sent] = server.documents
    assert (sent.caption, sent.reply_markup) == (None, None)
    [message] = server.messages_to(PIC)
    assert message.text == text
    assert message.callback_data == ["pic:export:done"]
    assert sent.message_id < message.message_id  # the document first


# --- files sent again by reference (a receipt to the PIC) ---------------------------

PHOTO_RECEIPT = FileRef(Channel.TELEGRAM, EventKind.PHOTO, "AgACAgUAAxkBAAIKPL")


def test_an_attachment_from_telegram_goes_first_on_its_own() -> None:
    photo, text = render_replies(
        [Reply("Konfirmasi?", options=BUTTONS, attachment=PHOTO_RECEIPT)], _T_ID
    )
    assert (photo.file, photo.text, photo.reply_markup) == (PHOTO_RECEIPT, "", None)
    method = photo.to_method(PIC)
    assert isinstance(method, SendPhoto) and method.photo == PHOTO_RECEIPT.ref
    assert (text.file, text.text) == (None, "Konfirmasi?")
    assert isinstance(text.reply_markup, InlineKeyboardMarkup)
    document = FileRef(Channel.TELEGRAM, EventKind.DOCUMENT, "BQACAgUAAxkBAAIB")
    [first, _] = render_replies([Reply("Konfirmasi?", attachment=document)], _T_ID)
    method = first.to_method(PIC)
    assert isinstance(method, SendDocument) and method.document == document.ref


def test_an_attachment_from_another_platform_is_left_out() -> None:
    whatsapp = FileRef(Channel.WHATSAPP, EventKind.PHOTO, "1234567890")
    [message] = render_replies([Reply("Bukti bayar: ada", attachment=whatsapp)], _T_ID)
    assert (message.file, message.text) == (None, "Bukti bayar: ada")


async def test_a_refused_attachment_still_lets_the_text_through(server: FakeTelegramServer) -> None:
    # The fake refuses a document's file_id sent as a photo, as Telegram does.
    file_id = "BQACAgUAAxkBAAIKbukti"
    server.add_file(file_id, "bukti.pdf", b"%PDF-1.4")
    wrong = FileRef(Channel.TELEGRAM, EventKind.PHOTO, file_id)
    engine = RecordingEngine(lambda event: [Reply("Konfirmasi?", attachment=wrong)])
    async with open_channel(server, engine) as channel:
        await channel.handle_update(update_of(server, server.text_update(PIC, "pic")))
    assert server.resent == []
    assert server.sent[-1].text == "Konfirmasi?"
    # Sent as what it is, it goes.
    right = FileRef(Channel.TELEGRAM, EventKind.DOCUMENT, file_id)
    engine = RecordingEngine(lambda event: [Reply("Konfirmasi?", attachment=right)])
    async with open_channel(server, engine) as channel:
        await channel.handle_update(update_of(server, server.text_update(PIC, "pic")))
    assert server.resent == [ResentFile("sendDocument", PIC, file_id)]
