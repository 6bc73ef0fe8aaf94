"""The console channel: a terminal chat with the engine, for trying the service.

Choices print as numbered options; typing a number picks that option (the engine
reads it as a value where a question counts, such as a number of months). Lines
starting with ":" talk to the console itself: ":user NAME" switches the
simulated person (one for the ASN side, another for the PIC side), ":file PATH"
sends a file from disk as a document (the KPJ file from BPJS), ":quit" ends.

Files the bot sends (the collective XLSX) are saved in `files_dir` and their
path printed. Proactive notices from the outbox are printed by `ConsoleSender`,
whoever they are for: it is one terminal for every simulated person.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

from domain.vocabulary import Channel, Language
from handlers import actions
from handlers.commands import typed_event
from handlers.i18n import Catalogs, Translator
from handlers.parsing import ascii_int
from handlers.types import (
    ConversationEngine,
    Document,
    EventKind,
    InboundEvent,
    Option,
    Reply,
)
from scheduler.sending import OutgoingNotice, SendResult, Sent

ReadLine = Callable[[str], Awaitable[str | None]]
Write = Callable[[str], None]

#: Files above this size are not read: the engine is told the file is too large,
#: as the Telegram channel does.
MAX_FILE_BYTES = 10 * 1024 * 1024
DEFAULT_FILES_DIR = Path("data/console_files")


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
        files_dir: Path = DEFAULT_FILES_DIR,
    ) -> None:
        self._engine = engine
        self._clock = clock
        # The console's own texts, in the default language (the person's chosen
        # language applies to everything the engine says).
        self._catalogs = catalogs
        self._t = catalogs.translator(Language.INDONESIAN)
        self._read_line = read_line
        self._write = write
        self._files_dir = files_dir
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
        number = ascii_int(text, max_digits=3)
        if number is not None and 1 <= number <= len(options):
            choice = options[number - 1].id
            if actions.lookup(choice) is not None:
                return dataclasses.replace(
                    event, kind=EventKind.CHOICE, text=None, choice_id=choice
                )
            # A question's own options: the number goes as typed, and the engine reads
            # it as the option at that place, or as a value where the step counts
            # (three months typed as "3", not the third button).
        return typed_event(event, line)

    @property
    def sender(self) -> ConsoleSender:
        """The outbox's way to this terminal, printing through the same `write`."""
        return ConsoleSender(self._catalogs, write=self._write)

    def render(self, replies: Sequence[Reply], t: Translator | None = None) -> None:
        """Print replies; `t` (the person's language) words the type-your-number hint.

        A reply's document is saved in `files_dir` first and its path printed.
        """
        for reply in replies:
            if reply.document is not None:
                saved = save_document(reply.document, self._files_dir)
                self._write("\n" + self._t("console.document_saved", path=str(saved)))
            self._write(f"\nbot> {reply.text}")
            for number, option in enumerate(reply.options, start=1):
                self._write(f"  [{number}] {option.label}")
            if reply.request_contact:
                self._write("  " + (t or self._t)("console.type_phone"))
            if reply.options:
                self._options[self.user] = reply.options

    async def send(self, line: str) -> Sequence[Reply]:
        """Hand one line to the engine and print the replies."""
        return await self.send_event(self.to_event(line))

    async def send_file(self, path_text: str) -> Sequence[Reply]:
        """Send the file at `path_text` (":file PATH") as a document; print the replies.

        No path prints the usage, a missing or unreadable file says so (nothing
        reaches the engine then); a file above MAX_FILE_BYTES goes without its
        content, flagged too large.
        """
        path_text = path_text.strip().strip("\"'")
        if not path_text:
            self._write(self._t("console.file_usage"))
            return ()
        try:
            name, content = await asyncio.to_thread(_read_file, path_text)
        except OSError:  # missing, a folder, no permission
            self._write(self._t("console.file_missing", path=path_text))
            return ()
        event = dataclasses.replace(
            self.to_event(""),
            kind=EventKind.DOCUMENT,
            text=None,
            file_name=name,
            file_content=content,
            file_too_large=content is None,
        )
        return await self.send_event(event)

    async def send_event(self, event: InboundEvent) -> Sequence[Reply]:
        """Hand one event to the engine and print the replies."""
        replies = await self._engine.handle(event)
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
            if stripped == ":file" or stripped.startswith(":file "):
                await self.send_file(stripped[len(":file") :])
                continue
            if not stripped:
                continue
            await self.send(line)


def _read_file(path_text: str) -> tuple[str, bytes | None]:
    """The file's name and bytes; None for bytes above MAX_FILE_BYTES. Raises OSError."""
    path = Path(path_text).expanduser()
    if path.stat().st_size > MAX_FILE_BYTES:
        return path.name, None
    return path.name, path.read_bytes()


def save_document(document: Document, folder: Path) -> Path:
    """Write `document` into `folder` under its own file name, never overwriting.

    Only the name's last component is used (a name cannot climb out of the
    folder); a taken name gets "-2", "-3", ... before its extension. The file
    is created owner-only (0600).
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(document.file_name.replace("\\", "/")).name
    if name in ("", ".", ".."):
        name = "document"
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate = folder / name
    number = 1
    while True:
        try:
            # Owner-only whatever the umask: a collective file holds full NIKs.
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            number += 1
            candidate = folder / f"{stem}-{number}{suffix}"
            continue
        with os.fdopen(fd, "wb") as file:
            file.write(document.content)
        return candidate


class ConsoleSender:
    """Delivers outbox notices on the console channel by printing them.

    Every recipient's notice is printed, not only the current `:user`'s: all
    simulated people share one terminal. Printing cannot fail, so the result is
    always Sent.
    """

    channel = Channel.CONSOLE

    def __init__(self, catalogs: Catalogs, *, write: Write = write_stdout) -> None:
        self._t = catalogs.translator(Language.INDONESIAN)
        self._write = write

    async def send(self, notice: OutgoingNotice) -> SendResult:
        """Print the notice's header (who it is for) and its body."""
        self._write("\n" + self._t("console.notice", user=notice.recipient))
        self._write(notice.body)
        return Sent()
