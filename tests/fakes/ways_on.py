""" "Every screen ends with a way on" (issue 12 item 7), checked as each channel shows it.

`assert_way_on(replies)` is for any flow test: after the engine's replies to an
event, the person must have options, both in the engine's own terms (the last
reply carries options) and as the console, Telegram and WhatsApp render them
(numbered lines, an inline keyboard, reply buttons / a list / numbered lines).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from aiogram.types import InlineKeyboardMarkup

from bot import telegram
from bot.console import ConsoleChannel
from bot.whatsapp import render as whatsapp
from domain.vocabulary import Language
from handlers.i18n import Catalogs
from handlers.types import Reply

_CATALOGS = Catalogs()


class _NoEngine:
    """The console's renderer needs no engine; anything the console asks of one fails."""


def _console_lines(replies: Sequence[Reply]) -> list[str]:
    lines: list[str] = []
    console = ConsoleChannel(
        _NoEngine(),  # type: ignore[arg-type]
        lambda: datetime(2026, 12, 1, tzinfo=UTC),
        _CATALOGS,
        write=lines.append,
    )
    console.render(replies)
    return lines


def assert_way_on(replies: Sequence[Reply], *, language: Language = Language.INDONESIAN) -> None:
    """Fail unless the last of `replies` offers options, as every channel shows them."""
    assert replies, "no reply at all: the person is left with nothing"
    last = replies[-1]
    assert last.options, f"no options after {last.text!r}"
    t = _CATALOGS.translator(language)

    printed = _console_lines(replies)
    assert printed and printed[-1].lstrip().startswith(f"[{len(last.options)}]"), printed[-3:]

    sent = telegram.render_replies(replies, t)
    assert sent and isinstance(sent[-1].reply_markup, InlineKeyboardMarkup), sent[-1:]
    buttons = [row[0].callback_data for row in sent[-1].reply_markup.inline_keyboard]
    assert buttons == [option.id for option in last.options]

    shown = whatsapp.render_replies(replies, t)
    final = shown[-1]
    if isinstance(final, whatsapp.ButtonsMessage):
        assert [key for key, _ in final.buttons] == [option.id for option in last.options]
    elif isinstance(final, whatsapp.ListMessage):
        assert [row.id for row in final.rows] == [option.id for option in last.options]
    else:
        # More options than a list holds: numbered lines the person answers by number.
        assert isinstance(final, whatsapp.TextMessage), final
        assert f"{len(last.options)}. " in final.text, final.text
