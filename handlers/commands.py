"""Slash commands in typed text: one parser for every channel.

Telegram, WhatsApp and the console all hand typed text to `typed_event`, so
"/bayar", "/Bayar@SertakanBot 2" and " /menu " mean the same on each; what a
command or a word ("batal", "menu") then does is the engine's business
(`handlers.engine.COMMANDS`, `FLOW_WORDS`, `IDLE_WORDS`).
"""

from __future__ import annotations

import dataclasses

from handlers.types import EventKind, InboundEvent


@dataclasses.dataclass(slots=True, frozen=True)
class Command:
    """A typed command: `word` lower case, without the slash or a "@BotName"; `args`
    the rest of the line, stripped, or None when there is none."""

    word: str
    args: str | None = None


def parse_command(text: str) -> Command | None:
    """`/Start@SertakanBot abc` -> Command("start", "abc"); None when `text` is not a command.

    A command is a slash directly followed by a word, after optional spaces around
    the whole text; "/", "/ menu" and "a/b" are plain text.
    """
    stripped = text.strip()
    if not stripped.startswith("/") or stripped[1:2].isspace():
        return None
    parts = stripped[1:].split(maxsplit=1)
    if not parts:
        return None
    word = parts[0].split("@", 1)[0].lower()
    if not word:
        return None
    args = parts[1].strip() if len(parts) > 1 else ""
    return Command(word, args or None)


def typed_event(event: InboundEvent, text: str) -> InboundEvent:
    """`event` carrying `text` as the person typed it: a COMMAND when `parse_command`
    finds one (the text kept whole), TEXT otherwise."""
    command = parse_command(text)
    if command is None:
        return dataclasses.replace(event, kind=EventKind.TEXT, text=text)
    return dataclasses.replace(
        event,
        kind=EventKind.COMMAND,
        text=text,
        command=command.word,
        command_args=command.args,
    )
