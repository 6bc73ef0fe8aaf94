"""The one command parser every channel uses (handlers/commands.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.vocabulary import Channel
from handlers.commands import Command, parse_command, typed_event
from handlers.types import EventKind, InboundEvent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/start", Command("start")),
        ("/Start@SertakanBot", Command("start")),
        ("/start  KODE123  ", Command("start", "KODE123")),
        ("/BATAL", Command("batal")),
        ("/daftar\nBudi", Command("daftar", "Budi")),
        ("  /menu  ", Command("menu")),
        ("/ halo", None),
        ("/", None),
        ("/@SertakanBot", None),
        ("halo /start", None),
        ("", None),
    ],
)
def test_parse_command(text: str, expected: Command | None) -> None:
    assert parse_command(text) == expected


def test_typed_text_becomes_a_command_or_stays_text_whole() -> None:
    base = InboundEvent(
        channel=Channel.WHATSAPP,
        sender_id="6281234567890",
        update_id="wamid.1",
        kind=EventKind.UNSUPPORTED,
        received_at=datetime(2026, 12, 2, tzinfo=UTC),
    )
    command = typed_event(base, "/bayar 2")
    assert (command.kind, command.text, command.command, command.command_args) == (
        EventKind.COMMAND,
        "/bayar 2",
        "bayar",
        "2",
    )
    text = typed_event(base, "batal")
    assert (text.kind, text.text, text.command) == (EventKind.TEXT, "batal", None)
