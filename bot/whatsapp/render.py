"""The engine's replies as WhatsApp messages, within Meta's limits.

`render_replies` is pure (replies in, message specs out) and decides how each
reply looks:

- options, at most 3, each shown whole on a reply button (20 UTF-16 units;
  a leading emoji may go), with distinct titles: reply buttons. A lone
  option is always a button: its label, or the label's head (below), or
  the label cut after a word as a last resort, the whole label then
  closing the body;
- at most 10 options: a list (its button labelled by the catalogue's
  `whatsapp.list_button`), a row per option titled with the label when it
  fits 24 units (a leading emoji may go); else with the label's head and
  its detail as the row's description (72). Labels are written "head –
  detail", "head: detail" or "head (detail)" ("📅 Bulanan – Rp16.800/bulan"
  shows "📅 Bulanan" over "Rp16.800/bulan"); a label without one is cut
  after a word and shown whole in the description;
- more, or labels a row cannot show whole: numbered lines and the catalogue's
  `whatsapp.choose_number` hint. The engine accepts a typed number, the label
  or its first words for any option, so nothing is lost;
- `request_contact` is plain text: WhatsApp vouches for the sender's number,
  the engine never needs a contact from this channel;
- a document is uploaded and sent first, with the reply's text as its caption
  when that fits (1,024) and there are no options;
- texts are split at 4,096 characters, an interactive message's body at
  1,024 (the text before it goes out as plain messages), every length counted
  in UTF-16 units as the platform's clients do (an emoji counts 2;
  `handlers.splitting`, the splitter every channel uses).

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
from handlers.splitting import shorten, split_tail, split_text, utf16_length
from handlers.types import Document, Option, Reply
from scheduler.sending import PlaceMissed, SendResult, Sent

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


def _one_line(label: str) -> str:
    return " ".join(label.split())


def _fits(text: str, limit: int) -> bool:
    return 0 < utf16_length(text) <= limit


#: Where a label's head ends and its detail begins: "📅 Bulanan – Rp16.800/bulan",
#: "1 bulan: Januari 2027, Rp16.800", "Siti Aminah (NIK 3201********0001)".
_DETAIL_SEPARATORS: Final = (" – ", " — ", ": ", " (")


def _bare(label: str) -> str:
    """`label` without its leading emoji or symbol ("📅 Bulanan" -> "Bulanan")."""
    index = 0
    while index < len(label) and not label[index].isalnum():
        index += 1
    return label[index:] if index < len(label) else label


def _head_and_detail(label: str) -> tuple[str, str] | None:
    """The label split at its first separator (see `_DETAIL_SEPARATORS`): the head names
    the option, the detail says more; a detail in brackets keeps them. None: no separator."""
    found = [(label.find(sep), sep) for sep in _DETAIL_SEPARATORS if label.find(sep) > 0]
    if not found:
        return None
    index, separator = min(found)
    head, detail = label[:index].strip(), label[index + len(separator) :].strip()
    if separator == " (":
        if not detail.endswith(")"):
            return None  # "Alamat (desa/kecamatan) belum lengkap": not a head and a detail
        detail = "(" + detail
    return (head, detail) if head and detail else None


def _title(label: str, limit: int) -> str | None:
    """`label`, or else without its leading symbol, when that fits `limit`."""
    for candidate in (label, _bare(label)):
        if _fits(candidate, limit):
            return candidate
    return None


def _buttons(options: Sequence[Option]) -> tuple[tuple[str, str], ...] | None:
    """Reply buttons when every option shows whole (a leading symbol may go) and the
    titles differ; a lone option is always a button (see `_lone_title`)."""
    if len(options) == 1:
        return ((options[0].id, _lone_title(options[0].label)),)
    if len(options) > MAX_BUTTONS:
        return None
    titles = [_title(option.label, MAX_BUTTON_TITLE) for option in options]
    if None in titles or len(set(titles)) != len(titles):
        return None
    return tuple((option.id, title) for option, title in zip(options, titles, strict=True) if title)


def _lone_title(label: str) -> str:
    """A lone option's button title: the label, its head, or the label cut after a word."""
    whole = _title(label, MAX_BUTTON_TITLE)
    if whole is not None:
        return whole
    split = _head_and_detail(label)
    head = _title(split[0], MAX_BUTTON_TITLE) if split is not None else None
    return head or shorten(label, MAX_BUTTON_TITLE)


def _row(option: Option) -> ListRow | None:
    """A list row showing the option whole: the label as the title; else its head as
    the title and its detail as the description (a leading symbol goes only when
    needed); else the label cut after a word with the whole label as the
    description. None when even that cannot show it."""
    label = option.label
    if _fits(label, MAX_ROW_TITLE):
        return ListRow(option.id, label)
    split = _head_and_detail(label)
    if split is not None and not _fits(split[1], MAX_ROW_DESCRIPTION):
        split = None
    # The head with its symbol, else the whole label without it, else the bare head.
    if split is not None and _fits(split[0], MAX_ROW_TITLE):
        return ListRow(option.id, split[0], split[1])
    if _fits(_bare(label), MAX_ROW_TITLE):
        return ListRow(option.id, _bare(label))
    if split is not None and _fits(_bare(split[0]), MAX_ROW_TITLE):
        return ListRow(option.id, _bare(split[0]), split[1])
    if _fits(label, MAX_ROW_DESCRIPTION):
        return ListRow(option.id, shorten(label, MAX_ROW_TITLE), label)
    return None


# --- replies -> messages ---------------------------------------------------------------


def render_replies(replies: Sequence[Reply], t: Translator) -> list[MessageSpec]:
    """The messages that show `replies` on WhatsApp, in order (see the module docstring)."""
    messages: list[MessageSpec] = []
    for reply in replies:
        options = [
            Option(o.id, _one_line(o.label)) for o in reply.options if o.id and o.label.strip()
        ]
        text = reply.text
        if reply.document is not None:
            if not options and utf16_length(text) <= MAX_CAPTION:
                messages.append(DocumentMessage(reply.document, text.strip()))
                continue
            messages.append(DocumentMessage(reply.document))
        if not options:
            messages.extend(TextMessage(chunk) for chunk in split_text(text, MAX_TEXT))
            continue
        messages.extend(_with_options(text, options, t))
    return messages


def _with_lone_label(
    body: str, options: Sequence[Option], buttons: tuple[tuple[str, str], ...]
) -> str:
    """A lone button that shows less than its label: the whole label closes the body
    (unless the body already says it, or it would not fit), so nothing is lost."""
    if len(options) != 1:
        return body
    label = options[0].label
    if buttons[0][1] in (label, _bare(label)) or label in body:
        return body
    longer = f"{body}\n\n{label}"
    return longer if utf16_length(longer) <= MAX_INTERACTIVE_BODY else body


def _with_options(text: str, options: Sequence[Option], t: Translator) -> list[MessageSpec]:
    if text.strip():
        buttons = _buttons(options)
        rows = [_row(option) for option in options] if buttons is None else []
        fits_list = buttons is None and len(options) <= MAX_LIST_ROWS and None not in rows
        if buttons is not None or fits_list:
            plain, body = split_tail(text, MAX_INTERACTIVE_BODY, MAX_TEXT)
            messages: list[MessageSpec] = [TextMessage(chunk) for chunk in plain]
            if buttons is not None:
                body = _with_lone_label(body, options, buttons)
                messages.append(ButtonsMessage(body, buttons))
            else:
                button = shorten(t(LIST_BUTTON_KEY), MAX_LIST_BUTTON)
                messages.append(
                    ListMessage(
                        body,
                        button,
                        shorten(button, MAX_SECTION_TITLE),
                        tuple(row for row in rows if row is not None),
                    )
                )
            return messages
    lines = "\n".join(f"{number}. {option.label}" for number, option in enumerate(options, start=1))
    numbered = "\n\n".join(part for part in (text.strip(), lines, t(CHOOSE_NUMBER_KEY)) if part)
    return [TextMessage(chunk) for chunk in split_text(numbered, MAX_TEXT)]


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
        except PlaceMissed:
            raise  # nothing was written: the sender takes a new place (bot/delivery.py)
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
