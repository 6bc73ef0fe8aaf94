"""The engine's replies as WhatsApp messages, within Meta's limits.

`render_replies` is pure (replies in, message specs out) and decides how each
reply looks:

- options, at most 3 with labels of at most 20 characters (distinct):
  reply buttons;
- at most 10 options with labels of at most 72 characters: a list (its
  button labelled by the catalogue's `whatsapp.list_button`); a label over the
  row title's 24 characters is cut in the title and shown whole in the row's
  description (72);
- more, or longer labels: numbered lines and the catalogue's
  `whatsapp.choose_number` hint. The engine accepts a typed number, the label
  or its first words for any option, so nothing is lost;
- `request_contact` is plain text: WhatsApp vouches for the sender's number,
  the engine never needs a contact from this channel;
- a document is uploaded and sent first, with the reply's text as its caption
  when that fits (1,024) and there are no options;
- texts are split at 4,096 characters (counted in UTF-16 units, as the
  platform's clients do; an emoji counts 2), an interactive message's body at
  1,024: the text before it goes out as plain messages.

`WhatsAppReplies.send` sends one spec through pywa and says what a refusal
means (bot/delivery.py retries, in order per person).
"""

from __future__ import annotations

import dataclasses
import logging
import mimetypes
from collections.abc import Sequence
from typing import Final

from pywa_async.types.callback import Button, Section, SectionList, SectionRow

from bot.whatsapp.client import WhatsAppClient
from bot.whatsapp.errors import classify_error
from domain.vocabulary import Channel, Language
from handlers.i18n import Catalogs, Translator
from handlers.types import Document, Reply
from scheduler.sending import SendResult, Sent

logger = logging.getLogger(__name__)

#: Meta's limits.
MAX_TEXT: Final = 4096
MAX_INTERACTIVE_BODY: Final = 1024
MAX_CAPTION: Final = 1024
MAX_BUTTONS: Final = 3
MAX_BUTTON_TITLE: Final = 20
MAX_LIST_ROWS: Final = 10
MAX_ROW_TITLE: Final = 24
MAX_ROW_DESCRIPTION: Final = 72
MAX_LIST_BUTTON: Final = 20
MAX_SECTION_TITLE: Final = 24
#: Catalogue keys of the channel's own texts.
LIST_BUTTON_KEY: Final = "whatsapp.list_button"
CHOOSE_NUMBER_KEY: Final = "whatsapp.choose_number"


@dataclasses.dataclass(slots=True, frozen=True)
class TextMessage:
    text: str


@dataclasses.dataclass(slots=True, frozen=True)
class ButtonsMessage:
    """Reply buttons: (option id, title) pairs, at most 3."""

    text: str
    buttons: tuple[tuple[str, str], ...]


@dataclasses.dataclass(slots=True, frozen=True)
class ListRow:
    id: str
    title: str
    description: str | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class ListMessage:
    """A list message: `button` opens it; one section titled `section`."""

    text: str
    button: str
    section: str
    rows: tuple[ListRow, ...]


@dataclasses.dataclass(slots=True, frozen=True)
class DocumentMessage:
    document: Document
    caption: str = ""


MessageSpec = TextMessage | ButtonsMessage | ListMessage | DocumentMessage


# --- text measure and splitting -----------------------------------------------------


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units (an emoji counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """`text` in chunks of at most `limit` UTF-16 units, on line boundaries where possible.

    A line longer than `limit` is cut at its last space inside the limit, or
    hard at the limit when it has none. Blank chunks are dropped.
    """
    if utf16_length(text) <= limit:
        return [text] if text.strip() else []
    chunks: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        if utf16_length(current) + utf16_length(line) <= limit:
            current += line
            continue
        if current:
            chunks.append(current)
            current = ""
        while utf16_length(line) > limit:
            head = _cut(line, limit)
            chunks.append(head)
            line = line[len(head) :]
        current = line
    if current:
        chunks.append(current)
    return [chunk.rstrip("\n") for chunk in chunks if chunk.strip()]


def _cut(line: str, limit: int) -> str:
    """The longest prefix of `line` within `limit` UTF-16 units, ending at a space if possible."""
    end = 0
    units = 0
    for index, char in enumerate(line):
        units += utf16_length(char)
        if units > limit:
            break
        end = index + 1
    head = line[:end]
    space = head.rfind(" ")
    return head[: space + 1] if space > 0 else head


def split_tail(text: str, limit: int) -> tuple[list[str], str]:
    """(plain chunks, tail): the tail is the longest run of whole last lines within `limit`.

    The tail becomes an interactive message's body; what comes before it goes
    out as plain messages (split at 4,096). A last line longer than `limit` is
    cut like any long line, its last piece being the tail.
    """
    text = text.rstrip()
    if utf16_length(text) <= limit:
        return [], text
    lines = text.splitlines(keepends=True)
    tail = ""
    while lines and utf16_length(lines[-1] + tail) <= limit:
        tail = lines.pop() + tail
    pieces: list[str] = []
    if not tail.strip():
        pieces = split_text(lines.pop(), limit)
        tail = pieces.pop()
    return [*split_text("".join(lines).rstrip("\n")), *pieces], tail.strip("\n")


def _one_line(label: str) -> str:
    return " ".join(label.split())


def _shortened(label: str, limit: int) -> str:
    """`label` within `limit` characters, cut at a word where possible, with "…"."""
    if len(label) <= limit:
        return label
    head = label[: limit - 1]
    space = head.rfind(" ")
    if space >= limit // 2:
        head = head[:space]
    return head.rstrip(" ,.;:-") + "…"


# --- replies -> messages ---------------------------------------------------------------


def render_replies(replies: Sequence[Reply], t: Translator) -> list[MessageSpec]:
    """The messages that show `replies` on WhatsApp, in order (see the module docstring)."""
    messages: list[MessageSpec] = []
    for reply in replies:
        options = [(o.id, _one_line(o.label)) for o in reply.options if o.id and o.label.strip()]
        text = reply.text
        if reply.document is not None:
            if not options and utf16_length(text) <= MAX_CAPTION:
                messages.append(DocumentMessage(reply.document, text.strip()))
                continue
            messages.append(DocumentMessage(reply.document))
        if not options:
            messages.extend(TextMessage(chunk) for chunk in split_text(text))
            continue
        messages.extend(_with_options(text, options, t))
    return messages


def _with_options(text: str, options: list[tuple[str, str]], t: Translator) -> list[MessageSpec]:
    labels = [label for _, label in options]
    if text.strip():
        fits_buttons = (
            len(options) <= MAX_BUTTONS
            and all(len(label) <= MAX_BUTTON_TITLE for label in labels)
            and len(set(labels)) == len(labels)
        )
        fits_list = len(options) <= MAX_LIST_ROWS and all(
            len(label) <= MAX_ROW_DESCRIPTION for label in labels
        )
        if fits_buttons or fits_list:
            plain, body = split_tail(text, MAX_INTERACTIVE_BODY)
            messages: list[MessageSpec] = [TextMessage(chunk) for chunk in plain]
            if fits_buttons:
                messages.append(ButtonsMessage(body, tuple(options)))
            else:
                button = _shortened(t(LIST_BUTTON_KEY), MAX_LIST_BUTTON)
                rows = tuple(
                    ListRow(
                        id=option_id,
                        title=_shortened(label, MAX_ROW_TITLE),
                        description=label if len(label) > MAX_ROW_TITLE else None,
                    )
                    for option_id, label in options
                )
                messages.append(
                    ListMessage(body, button, _shortened(button, MAX_SECTION_TITLE), rows)
                )
            return messages
    lines = "\n".join(f"{number}. {label}" for number, label in enumerate(labels, start=1))
    numbered = "\n\n".join(part for part in (text.strip(), lines, t(CHOOSE_NUMBER_KEY)) if part)
    return [TextMessage(chunk) for chunk in split_text(numbered)]


# --- sending -----------------------------------------------------------------------------


class WhatsAppReplies:
    """Sends a person's replies through pywa (a `bot.delivery.ReplyTransport`).

    Graph API refusals are classified as for the outbox (bot/whatsapp/sender.py):
    130429 (our number's throughput) pauses the whole channel, 131056 (too many
    to this person) defers only them, 131000 and 5xx are retried, 131026 and
    other 4xx skip the message.
    """

    channel: Channel = Channel.WHATSAPP
    channel_wide_rate_limit: bool = True

    def __init__(
        self,
        client: WhatsAppClient,
        catalogs: Catalogs,
        *,
        rate_limit_pause_s: float = 1.0,
        pair_retry_s: float = 6.0,
    ) -> None:
        """`rate_limit_pause_s`: the pause after 130429; `pair_retry_s`: after 131056."""
        self._client = client
        self._catalogs = catalogs
        self._rate_limit_pause_s = rate_limit_pause_s
        self._pair_retry_s = pair_retry_s

    def render(self, replies: Sequence[Reply], language: Language) -> list[MessageSpec]:
        return render_replies(replies, self._catalogs.translator(language))

    async def send(self, chat_id: str, part: MessageSpec) -> SendResult:
        try:
            await self._call(chat_id, part)
        except Exception as exc:
            return classify_error(
                exc, rate_limit_pause_s=self._rate_limit_pause_s, pair_retry_s=self._pair_retry_s
            )
        return Sent()

    async def _call(self, recipient: str, message: MessageSpec) -> None:
        wa = self._client.wa
        match message:
            case TextMessage(text=text):
                await wa.send_message(to=recipient, text=text)
            case ButtonsMessage(text=text, buttons=buttons):
                await wa.send_message(
                    to=recipient,
                    text=text,
                    buttons=[Button(title=title, callback_data=key) for key, title in buttons],
                )
            case ListMessage(text=text, button=button, section=section, rows=rows):
                await wa.send_message(
                    to=recipient,
                    text=text,
                    buttons=SectionList(
                        button_title=button,
                        sections=[
                            Section(
                                title=section,
                                rows=[
                                    SectionRow(
                                        title=row.title,
                                        callback_data=row.id,
                                        description=row.description,
                                    )
                                    for row in rows
                                ],
                            )
                        ],
                    ),
                )
            case DocumentMessage(document=document, caption=caption):
                await wa.send_document(
                    to=recipient,
                    document=document.content,
                    filename=document.file_name,
                    caption=caption or None,
                    mime_type=_mime_type(document),
                )


def _mime_type(document: Document) -> str:
    """The document's type; guessed from its name when it says only octet-stream."""
    if document.mime_type and document.mime_type != "application/octet-stream":
        return document.mime_type
    guessed, _ = mimetypes.guess_type(document.file_name)
    return guessed or document.mime_type
