"""The Telegram adapter against recorded payloads and a fake Bot API server over HTTP.

The engine here is `ScriptedEngine`, a test double: it records the events it was
given and answers from a script. The real engine's end-to-end test lives with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram.types import (
    InlineKeyboardMarkup,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from bot.delivery import DeliverySettings
from bot.settings import TelegramSettings
from bot.telegram import (
    SECRET_HEADER,
    TelegramChannel,
    render_replies,
)
from domain.vocabulary import Channel, Language
from handlers.i18n import Catalogs
from handlers.splitting import split_text, utf16_length
from handlers.types import EventKind, InboundEvent, Option, QueuedReplies, Reply
from tests.fakes.clock import FrozenClock
from tests.fakes.telegram_api import FakeTelegramServer, load_payload

NOW = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
SITI = 5512345678
NIK = "3201234567890001"
SECRET = "s3cret-token_for-webhook"
_T_ID = Catalogs().translator(Language.INDONESIAN)
#: Replies refused by the fake are tried again within milliseconds.
FAST_RETRIES = DeliverySettings(
    retry_first=timedelta(milliseconds=10), retry_cap=timedelta(milliseconds=50)
)


class ScriptedFailure(RuntimeError):
    pass


class ScriptedEngine:
    """Test double for ConversationEngine: records events, answers from a script.

    `fail[update_id] = n` makes the next n attempts at that update raise;
    `before` runs on every event before answering (to block or observe).
    """

    def __init__(
        self,
        answer: Callable[[InboundEvent], Sequence[Reply]] | None = None,
        language: Language = Language.INDONESIAN,
    ) -> None:
        self.events: list[InboundEvent] = []
        self.fail: dict[str, int] = {}
        self.before: Callable[[InboundEvent], Awaitable[None]] | None = None
        self._answer = answer or (lambda event: [Reply(text=f"ok {event.update_id}")])
        self._language = language

    async def handle(self, event: InboundEvent) -> Sequence[Reply]:
        self.events.append(event)
        if self.before is not None:
            await self.before(event)
        if self.fail.get(event.update_id, 0) > 0:
            self.fail[event.update_id] -= 1
            raise ScriptedFailure(f"engine failed on {event.text}")
        return self._answer(event)

    async def handle_queued(self, event: InboundEvent) -> QueuedReplies:
        return QueuedReplies(await self.handle(event), self._language)

    async def language_of(self, channel: Channel, sender_id: str) -> Language:
        return self._language

    def update_ids(self, sender_id: int | None = None) -> list[int]:
        return [
            int(event.update_id)
            for event in self.events
            if sender_id is None or event.sender_id == str(sender_id)
        ]


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


def make_settings(server: FakeTelegramServer, **overrides: Any) -> TelegramSettings:
    values: dict[str, Any] = {
        "token": SecretStr(server.token),
        "api_base": server.base_url,
        "polling_timeout_s": 1,
        "webhook_url": "https://bot.example.go.id/telegram/webhook",
        "webhook_secret": SecretStr(SECRET),
    }
    values.update(overrides)
    return TelegramSettings(**values)


@contextlib.asynccontextmanager
async def open_channel(
    server: FakeTelegramServer, engine: ScriptedEngine
) -> AsyncIterator[TelegramChannel]:
    channel = TelegramChannel(
        engine,
        make_settings(server),
        FrozenClock(NOW),
        retry_first_s=0.01,
        retry_cap_s=0.05,
        delivery=FAST_RETRIES,
    )
    try:
        yield channel
        await asyncio.wait_for(channel.replies.drain(), 10)
    finally:
        await channel.close()


@contextlib.asynccontextmanager
async def polling(channel: TelegramChannel) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(channel.run_polling(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def offline_channel(engine: ScriptedEngine | None = None) -> TelegramChannel:
    """A channel for pure translation tests; it never opens a connection."""
    settings = TelegramSettings(token=SecretStr("123456789:TEST-offline"), api_base="http://x")
    return TelegramChannel(engine or ScriptedEngine(), settings, FrozenClock(NOW))


def fixture_event(name: str) -> InboundEvent | None:
    return offline_channel().to_event(Update.model_validate(load_payload(name)))


# --- updates in ------------------------------------------------------------------


def test_text_message_becomes_text_event() -> None:
    event = fixture_event("message_text")
    assert event == InboundEvent(
        channel=Channel.TELEGRAM,
        sender_id=str(SITI),
        update_id="870000001",
        kind=EventKind.TEXT,
        received_at=datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        text="Halo, saya mau daftar",
        display_name="Siti Rahma",
        language_hint="id",
    )


def test_command_drops_bot_suffix_and_keeps_args() -> None:
    event = fixture_event("command_start")
    assert event is not None
    assert (event.kind, event.command, event.command_args) == (EventKind.COMMAND, "start", "abc")


def test_own_contact() -> None:
    event = fixture_event("contact_own")
    assert event is not None
    assert event.kind is EventKind.CONTACT
    assert event.contact_phone == "6281234567890"
    assert event.contact_is_own is True


def test_contact_of_another_user_is_not_own() -> None:
    event = fixture_event("contact_other")
    assert event is not None
    assert event.kind is EventKind.CONTACT
    assert event.contact_phone == "+62 812-3456-7891"
    assert event.contact_is_own is False


def test_callback_query_becomes_choice_stamped_by_the_clock() -> None:
    event = fixture_event("callback_query")
    assert event is not None
    assert (event.kind, event.choice_id, event.received_at) == (
        EventKind.CHOICE,
        "reg:consent:yes",
        NOW,
    )
    assert event.sender_id == str(SITI)


def test_photo_takes_the_largest_size() -> None:
    event = fixture_event("photo")
    assert event is not None
    assert (event.kind, event.file_ref, event.text) == (
        EventKind.PHOTO,
        "AgACAgUAAxkBAAIBEGeLarge",
        "Bukti transfer",
    )


def test_document_keeps_file_id_and_name() -> None:
    event = fixture_event("document")
    assert event is not None
    assert (event.kind, event.file_ref, event.file_name) == (
        EventKind.DOCUMENT,
        "BQACAgUAAxkBAAIBEWeDoc",
        "kpj_opd_dinkes.xlsx",
    )


def test_sticker_is_unsupported_but_still_from_the_person() -> None:
    event = fixture_event("sticker")
    assert event is not None
    assert (event.kind, event.sender_id, event.update_id) == (
        EventKind.UNSUPPORTED,
        str(SITI),
        "870000008",
    )


@pytest.mark.parametrize("name", ["channel_post", "group_message"])
def test_updates_outside_a_private_chat_are_ignored(name: str) -> None:
    assert fixture_event(name) is None


# --- rendering -------------------------------------------------------------------


def test_options_render_as_one_inline_button_per_row() -> None:
    options = (Option("enroll:occ:driver", "Sopir"), Option("enroll:occ:other", "Lainnya " * 20))
    [message] = render_replies([Reply("Pekerjaan?", options=options)], _T_ID)
    assert isinstance(message.reply_markup, InlineKeyboardMarkup)
    rows = message.reply_markup.inline_keyboard
    assert [[button.callback_data for button in row] for row in rows] == [
        ["enroll:occ:driver"],
        ["enroll:occ:other"],
    ]
    assert rows[0][0].text == "Sopir"
    assert len(rows[1][0].text) <= 64 and rows[1][0].text.endswith("…")


def test_option_id_over_64_bytes_is_refused() -> None:
    with pytest.raises(ValueError):
        render_replies([Reply("x", options=(Option("é" * 33, "x"),))], _T_ID)


@pytest.mark.parametrize(
    ("language", "label"),
    [
        (Language.INDONESIAN, "📱 Bagikan nomor HP saya"),
        (Language.ENGLISH, "📱 Share my phone number"),
    ],
)
def test_request_contact_renders_a_one_time_share_button(language: Language, label: str) -> None:
    [message] = render_replies(
        [Reply("Nomor HP?", request_contact=True)], Catalogs().translator(language)
    )
    markup = message.reply_markup
    assert isinstance(markup, ReplyKeyboardMarkup)
    assert markup.one_time_keyboard is True
    [[button]] = markup.keyboard
    assert (button.text, button.request_contact) == (label, True)


def test_first_plain_reply_removes_a_left_over_contact_keyboard() -> None:
    replies = [
        Reply("Pilih", options=(Option("a", "A"),)),
        Reply("Terima kasih"),
        Reply("Lanjut"),
    ]
    markups = [m.reply_markup for m in render_replies(replies, _T_ID)]
    assert isinstance(markups[0], InlineKeyboardMarkup)
    assert isinstance(markups[1], ReplyKeyboardRemove)
    assert markups[2] is None


def test_5000_char_text_is_split_on_line_boundaries() -> None:
    lines = [f"{n:04d} " + "x" * 45 for n in range(100)]  # 100 lines of 50 chars
    text = "\n".join(lines)
    assert len(text) > 5000 - 100
    text += "\n" + "y" * 99
    chunks = split_text(text, 4096)
    assert len(chunks) == 2
    assert all(utf16_length(chunk) <= 4096 for chunk in chunks)
    assert "\n".join(chunks) == text
    assert all(line in lines or line == "y" * 99 for c in chunks for line in c.split("\n"))


def test_a_single_long_line_is_cut_within_the_limit() -> None:
    text = "📱" * 3000  # 6000 UTF-16 units, no spaces
    chunks = split_text(text, 4096)
    assert "".join(chunks) == text
    assert all(utf16_length(chunk) <= 4096 for chunk in chunks)


def test_options_go_on_the_last_chunk_of_a_long_reply() -> None:
    text = "\n".join("baris " * 10 for _ in range(100))
    messages = render_replies([Reply(text, options=(Option("ok", "OK"),))], _T_ID)
    assert len(messages) == 2
    assert isinstance(messages[0].reply_markup, ReplyKeyboardRemove | type(None))
    assert isinstance(messages[-1].reply_markup, InlineKeyboardMarkup)


# --- replies over HTTP -----------------------------------------------------------


async def test_replies_are_sent_as_plain_text_with_buttons(server: FakeTelegramServer) -> None:
    engine = ScriptedEngine(
        lambda event: [
            Reply("<b>Nama</b> & alamat"),
            Reply("Setuju?", options=(Option("reg:consent:yes", "Ya"),)),
        ]
    )
    async with open_channel(server, engine) as channel:
        await channel.handle_update(Update.model_validate(server.text_update(42, "halo")))
    first, second = await server.wait_for_messages(42, 2)
    assert (first.text, first.parse_mode) == ("<b>Nama</b> & alamat", None)
    assert second.callback_data == ["reg:consent:yes"]


async def test_contact_request_uses_the_persons_language(server: FakeTelegramServer) -> None:
    engine = ScriptedEngine(lambda e: [Reply("Phone?", request_contact=True)], Language.ENGLISH)
    async with open_channel(server, engine) as channel:
        await channel.handle_update(Update.model_validate(server.text_update(42, "/daftar")))
    [message] = await server.wait_for_messages(42, 1)
    assert message.reply_markup == {
        "keyboard": [[{"text": "📱 Share my phone number", "request_contact": True}]],
        "resize_keyboard": True,
        "one_time_keyboard": True,
    }
    assert engine.events[0].command == "daftar"


async def test_a_pressed_button_is_answered_then_the_reply_sent(
    server: FakeTelegramServer,
) -> None:
    engine = ScriptedEngine()
    async with open_channel(server, engine) as channel:
        update = server.callback_update(42, "reg:consent:yes", message_id=777)
        await channel.handle_update(Update.model_validate(update))
    await server.wait_for_messages(42, 1)
    methods = [call.method for call in server.calls]
    # One call to stop the spinner, one reply; the old keyboard is not edited.
    assert methods == ["answerCallbackQuery", "sendMessage"]
    [answer] = server.calls_of("answerCallbackQuery")
    assert answer.params["callback_query_id"] == update["callback_query"]["id"]
    assert engine.events[0].choice_id == "reg:consent:yes"


async def test_a_refused_reply_is_sent_again_in_order_and_logged_without_content(
    server: FakeTelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine = ScriptedEngine(lambda event: [Reply(f"NIK {NIK}"), Reply("kedua")])
    server.fail_next("sendMessage", 1)
    caplog.set_level(logging.DEBUG)
    async with open_channel(server, engine) as channel:
        await channel.handle_update(Update.model_validate(server.text_update(42, NIK)))
    first, second = await server.wait_for_messages(42, 2)
    assert (first.text, second.text) == (f"NIK {NIK}", "kedua")
    assert len(server.messages_to(42)) == 2
    assert "reply refused" in caplog.text
    assert NIK not in caplog.text


async def test_set_commands_publishes_both_menus(server: FakeTelegramServer) -> None:
    async with open_channel(server, ScriptedEngine()) as channel:
        await channel.set_commands()
    indonesian = [c["command"] for c in server.commands[None]]
    english = [c["command"] for c in server.commands["en"]]
    assert {"start", "menu", "daftar", "pekerja", "bantuan", "batal", "bahasa", "tanya"} <= set(
        indonesian
    )
    assert {"start", "help", "cancel", "bahasa"} <= set(english)
    # Paying and stopping are findable from the command menu (issue 12 items 10, 11).
    assert {"bayar", "berhenti"} <= set(indonesian) & set(english)
    names = indonesian + english
    assert all(n.isascii() and n.replace("_", "").isalnum() and n.islower() for n in names)


# --- long polling ----------------------------------------------------------------


async def test_polling_keeps_each_persons_order_and_runs_people_concurrently(
    server: FakeTelegramServer,
) -> None:
    alice, bob = 1001, 2002
    bob_seen = asyncio.Event()

    async def before(event: InboundEvent) -> None:
        if event.sender_id == str(bob):
            bob_seen.set()
        elif not bob_seen.is_set():
            # Alice's first update waits for Bob's: only possible if they run concurrently.
            await asyncio.wait_for(bob_seen.wait(), 5)

    engine = ScriptedEngine()
    engine.before = before
    pushed = [
        server.push_update(server.text_update(user, f"pesan {n}"))
        for n, user in enumerate([alice, bob, alice, bob, alice])
    ]
    async with open_channel(server, engine) as channel, polling(channel):
        await server.wait_for_messages(alice, 3)
        await server.wait_for_messages(bob, 2)
        await server.wait_until(lambda: server.confirmed_offset == pushed[-1]["update_id"] + 1)
    ids = [u["update_id"] for u in pushed]
    assert engine.update_ids(alice) == [ids[0], ids[2], ids[4]]
    assert engine.update_ids(bob) == [ids[1], ids[3]]
    assert [m.text for m in server.messages_to(alice)] == [f"ok {i}" for i in ids[0::2]]


async def test_polling_does_not_confirm_an_update_whose_handling_failed(
    server: FakeTelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine = ScriptedEngine()
    first, second, third = (
        server.push_update(server.text_update(SITI, text))["update_id"]
        for text in ("satu", NIK, "tiga")
    )
    engine.fail[str(second)] = 1
    offsets_when_second_succeeded: list[int] = []

    async def before(event: InboundEvent) -> None:
        if int(event.update_id) == second and engine.fail[str(second)] == 0:
            offsets_when_second_succeeded.append(server.confirmed_offset)

    engine.before = before
    async with open_channel(server, engine) as channel, polling(channel):
        await server.wait_for_messages(SITI, 3)
        await server.wait_until(lambda: server.confirmed_offset == third + 1)

    # The failed update was never confirmed before it succeeded...
    assert offsets_when_second_succeeded and offsets_when_second_succeeded[0] <= second
    # ...the third waited for it, and the first came back (the real engine drops replays).
    assert engine.update_ids() == [first, second, first, second, third]
    assert [m.text for m in server.messages_to(SITI)] == [
        f"ok {first}",
        f"ok {first}",
        f"ok {second}",
        f"ok {third}",
    ]
    assert "ScriptedFailure" in caplog.text
    assert NIK not in caplog.text


async def test_polling_survives_get_updates_failures(server: FakeTelegramServer) -> None:
    engine = ScriptedEngine()
    server.fail_next("getUpdates", 2, network=True)
    update_id = server.push_update(server.text_update(SITI, "halo"))["update_id"]
    async with open_channel(server, engine) as channel, polling(channel):
        await server.wait_for_messages(SITI, 1)
        server.fail_next("getUpdates", 1)
        later = server.push_update(server.text_update(SITI, "lagi"))["update_id"]
        await server.wait_for_messages(SITI, 2)
        await server.wait_until(lambda: server.confirmed_offset == later + 1)
    assert engine.update_ids() == [update_id, later]
    assert server.calls_of("deleteWebhook")


async def test_stopping_confirms_what_was_handled(server: FakeTelegramServer) -> None:
    engine = ScriptedEngine()
    update_id = server.push_update(server.text_update(SITI, "halo"))["update_id"]
    async with open_channel(server, engine) as channel:
        stop = asyncio.Event()

        async def stop_after_handling(event: InboundEvent) -> None:
            stop.set()

        engine.before = stop_after_handling
        await asyncio.wait_for(channel.run_polling(stop), 10)
    assert server.confirmed_offset == update_id + 1
    assert len(server.messages_to(SITI)) == 1


# --- webhook ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def webhook_client(
    server: FakeTelegramServer, engine: ScriptedEngine
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with open_channel(server, engine) as channel:
        app = web.Application()
        channel.webhook_routes(app)
        async with TestClient(TestServer(app)) as client:
            yield client


@pytest.mark.parametrize("headers", [{}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: ""}])
async def test_webhook_refuses_a_missing_or_wrong_secret(
    server: FakeTelegramServer, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    engine = ScriptedEngine()
    update = server.text_update(SITI, NIK)
    async with webhook_client(server, engine) as client:
        response = await client.post("/telegram/webhook", json=update, headers=headers)
    assert response.status == 401
    assert engine.events == []
    assert server.calls == []
    assert NIK not in caplog.text


async def test_webhook_handles_a_valid_update_before_answering(server: FakeTelegramServer) -> None:
    engine = ScriptedEngine()
    update = server.text_update(SITI, "halo")
    async with webhook_client(server, engine) as client:
        response = await client.post(
            "/telegram/webhook", json=update, headers={SECRET_HEADER: SECRET}
        )
        assert response.status == 200
        # Answered only after the engine ran (and stored the reply, which goes
        # out on its own: Telegram does not wait for it).
        assert engine.update_ids() == [update["update_id"]]
        [reply] = await server.wait_for_messages(SITI, 1)
        assert reply.text == f"ok {update['update_id']}"


async def test_webhook_answers_500_when_the_engine_fails(server: FakeTelegramServer) -> None:
    engine = ScriptedEngine()
    update = server.text_update(SITI, "halo")
    engine.fail[str(update["update_id"])] = 1
    async with webhook_client(server, engine) as client:
        response = await client.post(
            "/telegram/webhook", json=update, headers={SECRET_HEADER: SECRET}
        )
    assert response.status == 500
    assert server.sent == []


@pytest.mark.parametrize("body", ["{not json", '{"message": "no update_id"}'])
async def test_webhook_refuses_a_body_that_is_not_an_update(
    server: FakeTelegramServer, body: str
) -> None:
    engine = ScriptedEngine()
    async with webhook_client(server, engine) as client:
        response = await client.post(
            "/telegram/webhook",
            data=body,
            headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"},
        )
    assert response.status == 400
    assert engine.events == []


async def test_set_webhook_registers_url_and_secret(server: FakeTelegramServer) -> None:
    async with open_channel(server, ScriptedEngine()) as channel:
        await channel.set_webhook()
    assert server.webhook_url == "https://bot.example.go.id/telegram/webhook"
    assert server.webhook_secret == SECRET
    [call] = server.calls_of("setWebhook")
    assert call.params["allowed_updates"] == ["message", "callback_query"]


def test_webhook_mode_requires_a_secret() -> None:
    settings = TelegramSettings(token=SecretStr("123456789:TEST-offline"), webhook_secret=None)
    channel = TelegramChannel(ScriptedEngine(), settings, FrozenClock(NOW))
    with pytest.raises(ValueError):
        channel.webhook_routes(web.Application())
