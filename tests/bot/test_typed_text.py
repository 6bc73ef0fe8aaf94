"""One command parser for every channel (issue 12, structure): the same typed line is the
same event on the console, Telegram and WhatsApp."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from aiogram.types import Update

from bot.console import ConsoleChannel
from bot.whatsapp.events import parse_webhook, to_event
from handlers.i18n import Catalogs
from handlers.types import EventKind, InboundEvent
from tests.bot.test_telegram_adapter import ScriptedEngine, offline_channel
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.clock import FrozenClock
from tests.fakes.telegram_api import load_payload
from tests.fakes.whatsapp_payloads import SITI

RECEIVED = datetime(2026, 11, 21, 3, 5, tzinfo=UTC)


def on_console(line: str) -> InboundEvent:
    return ConsoleChannel(ScriptedEngine(), FrozenClock(), Catalogs()).to_event(line)


def on_telegram(line: str) -> InboundEvent:
    payload = load_payload("message_text")
    payload["message"]["text"] = line
    event = offline_channel().to_event(Update.model_validate(payload))
    assert event is not None
    return event


def on_whatsapp(line: str) -> InboundEvent:
    batch = parse_webhook(json.loads(wa.encode(wa.webhook(wa.text(SITI, line)))))
    [entry] = batch.messages
    event = to_event(entry.message_id, entry.payload, received_at=RECEIVED)
    assert event is not None
    return event


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/bayar", (EventKind.COMMAND, "bayar", None)),
        ("/Bayar@SertakanBot", (EventKind.COMMAND, "bayar", None)),
        ("/start  PIC-7K3QX9AB ", (EventKind.COMMAND, "start", "PIC-7K3QX9AB")),
        (" /menu", (EventKind.COMMAND, "menu", None)),
        ("/ menu", (EventKind.TEXT, None, None)),
        ("/", (EventKind.TEXT, None, None)),
        ("batal", (EventKind.TEXT, None, None)),
        ("1/2", (EventKind.TEXT, None, None)),
    ],
)
def test_a_typed_line_means_the_same_on_every_channel(
    line: str, expected: tuple[EventKind, str | None, str | None]
) -> None:
    for channel in (on_console, on_telegram, on_whatsapp):
        event = channel(line)
        assert (event.kind, event.command, event.command_args) == expected, channel.__name__
        assert event.text == line, channel.__name__


def test_a_number_in_another_script_typed_on_the_console_is_text_not_a_crash() -> None:
    event = on_console("²")  # str.isdigit() says yes, int() refuses it
    assert (event.kind, event.text) == (EventKind.TEXT, "²")
