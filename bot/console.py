"""The console channel: a terminal chat with the engine, for trying the service.

Choices print as numbered options; typing a number presses that button. Lines
starting with ":" talk to the console itself: ":user NAME" switches the
simulated person (one for the ASN side, another for the PIC side), ":quit" ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from domain.vocabulary import Channel, Language
from handlers.i18n import Catalogs, Translator
from handlers.types import ConversationEngine, EventKind, InboundEvent, Option, Reply

ReadLine = Callable[[str], Awaitable[str | None]]
Write = Callable[[str], None]


async def read_stdin_line(prompt: str) -> str | None:
    """Read one line from the terminal without blocking the event loop; None at EOF."""

    def _read() -> str | None:
        try:
            return input(prompt)
        except EOFError:
            return None

    return await asyncio.to_thread(_read)


def write_stdout(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class ConsoleChannel:
    """Reads lines, builds InboundEvents, prints Replies."""

    def __init__(
        self,
        engine: ConversationEngine,
        clock: Callable[[], datetime],
        catalogs: Catalogs,
        *,
        user: str = "asn",
        read_line: ReadLine = read_stdin_line,
        write: Write = write_stdout,
    ) -> None:
        self._engine = engine
        self._clock = clock
        # The console's own texts, in the default language (the person's chosen
        # language applies to everything the engine says).
        self._catalogs = catalogs
        self._t = catalogs.translator(Language.INDONESIAN)
        self._read_line = read_line
        self._write = write
        self.user = user
        #: The options of the last question shown, per user, so "2" presses button 2.
        self._options: dict[str, tuple[Option, ...]] = {}

    def to_event(self, line: str) -> InboundEvent:
        """The event for one typed line of the current user."""
        text = line.strip()
        event = InboundEvent(
            channel=Channel.CONSOLE,
            sender_id=self.user,
            # Unique across restarts: the dedupe log must never see a console id twice.
            update_id=uuid.uuid4().hex,
            kind=EventKind.TEXT,
            received_at=self._clock(),
            text=line,
            display_name=self.user,
        )
        options = self._options.get(self.user, ())
        if text.isdigit() and 1 <= int(text) <= len(options):
            choice = options[int(text) - 1].id
            return dataclasses.replace(event, kind=EventKind.CHOICE, text=None, choice_id=choice)
        if text.startswith("/") and len(text) > 1:
            command, _, args = text[1:].partition(" ")
            return dataclasses.replace(
                event,
                kind=EventKind.COMMAND,
                text=text,
                command=command.lower(),
                command_args=args.strip() or None,
            )
        return event

    def render(self, replies: Sequence[Reply], t: Translator | None = None) -> None:
        """Print replies; `t` (the person's language) words the type-your-number hint."""
        for reply in replies:
            self._write(f"\nbot> {reply.text}")
            for number, option in enumerate(reply.options, start=1):
                self._write(f"  [{number}] {option.label}")
            if reply.request_contact:
                self._write("  " + (t or self._t)("console.type_phone"))
            if reply.options:
                self._options[self.user] = reply.options

    async def send(self, line: str) -> Sequence[Reply]:
        """Hand one line to the engine and print the replies."""
        replies = await self._engine.handle(self.to_event(line))
        t = None
        if any(reply.request_contact for reply in replies):
            language = await self._engine.language_of(Channel.CONSOLE, self.user)
            t = self._catalogs.translator(language)
        self.render(replies, t)
        return replies

    async def run(self) -> None:
        """The interactive loop; starts with /start so the menu shows."""
        self._write(self._t("console.help") + "\n")
        await self.send("/start")
        while True:
            line = await self._read_line(f"\n{self.user}> ")
            if line is None:
                return
            stripped = line.strip()
            if stripped in (":quit", ":q", ":exit"):
                return
            if stripped.startswith(":user"):
                name = stripped[len(":user") :].strip()
                if not name:
                    self._write(self._t("console.current_user", user=self.user))
                    continue
                self.user = name
                self._write(self._t("console.switched_user", user=name))
                await self.send("/menu")
                continue
            if not stripped:
                continue
            await self.send(line)
