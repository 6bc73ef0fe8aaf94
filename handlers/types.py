"""What channels hand to the engine and what the engine hands back.

Channels translate platform payloads into `InboundEvent` and render `Reply`;
nothing here knows about a messenger library.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from domain.vocabulary import Channel, Language

#: Telegram limits callback_data to 64 bytes; option ids stay well inside it.
MAX_OPTION_ID_BYTES = 48
#: Longest platform file reference an event may carry (`payment.receipt_file_ref` holds
#: 200 characters with a "document:" prefix); Telegram file_ids and WhatsApp media ids
#: are far shorter, so a longer one is not a file the platform gave us.
MAX_FILE_REF_LENGTH = 180


class EventKind(StrEnum):
    TEXT = "text"
    CHOICE = "choice"
    CONTACT = "contact"
    PHOTO = "photo"
    DOCUMENT = "document"
    COMMAND = "command"
    UNSUPPORTED = "unsupported"


@dataclasses.dataclass(slots=True, frozen=True)
class InboundEvent:
    """One thing a person sent, in channel-neutral form.

    `update_id` is unique per channel (Telegram update_id, WhatsApp message id,
    a console counter) and is the dedupe key: the same update twice has one effect.
    `sender_id` is the channel's id of the person (Telegram user id, WhatsApp
    wa_id, console user name); replies go back to the same person.
    """

    channel: Channel
    sender_id: str
    update_id: str
    kind: EventKind
    received_at: datetime
    text: str | None = None
    #: The option id of a pressed button, exactly as the engine issued it.
    choice_id: str | None = None
    #: A shared contact's phone number, as the platform sent it.
    contact_phone: str | None = None
    #: True when the shared contact is the sender's own (Telegram: contact.user_id == from.id).
    contact_is_own: bool = False
    #: The sender's own phone number as the platform vouches for it (WhatsApp: the
    #: `wa_id`, as E.164 "+62..."); registration then does not ask for it.
    sender_phone: str | None = None
    #: A platform file reference (Telegram file_id, WhatsApp media id) for photos/documents.
    file_ref: str | None = None
    file_name: str | None = None
    #: The document's bytes, fetched by the channel before the engine runs (so no
    #: download happens inside a transaction); None when not fetched or too large.
    file_content: bytes | None = None
    #: True when the channel did not fetch the file because it exceeds its size limit.
    file_too_large: bool = False
    #: For COMMAND: the command word without the slash, lower case ("start", "help").
    command: str | None = None
    command_args: str | None = None
    display_name: str | None = None
    #: The platform's language hint (Telegram language_code), used only for new accounts.
    language_hint: str | None = None
    #: The person sent this before a message of theirs that was already handled (it
    #: arrived late): it is not taken as an answer to the current question.
    out_of_order: bool = False


@dataclasses.dataclass(slots=True, frozen=True)
class Option:
    """One choice offered to the user.

    `id` is stable and at most 48 bytes (fits Telegram's 64-byte callback_data);
    `label` is the text on the button, already translated.
    """

    id: str
    label: str


@dataclasses.dataclass(slots=True, frozen=True)
class Document:
    """A file the bot sends (the PIC's collective XLSX)."""

    file_name: str
    content: bytes
    mime_type: str = "application/octet-stream"


@dataclasses.dataclass(slots=True, frozen=True)
class FileRef:
    """A file already on a platform, shown again by its reference (a receipt photo to
    the PIC). Only a channel that issued the reference can send it: `channel`; the
    others leave it out (the reply's text says a receipt exists)."""

    channel: Channel
    #: EventKind.PHOTO or EventKind.DOCUMENT (the platforms send them differently).
    kind: EventKind
    ref: str


@dataclasses.dataclass(slots=True, frozen=True)
class Reply:
    """One message to the person who sent the event.

    `options` render as buttons (Telegram inline keyboard) or numbered lines
    (console). `document` attaches a file. `request_contact` asks for the user's
    own phone number (Telegram's share-contact keyboard button); channels without
    it let the user type it.
    """

    text: str
    options: tuple[Option, ...] = ()
    request_contact: bool = False
    #: A file sent before the text (the text becomes its caption when short enough).
    document: Document | None = None
    #: A platform file shown before the text, when the person's channel issued it.
    attachment: FileRef | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class QueuedReplies:
    """The engine's answer to one event, already stored for delivery.

    `reply_id` is the `pending_reply` row written in the event's transaction
    (None when there was nothing to send, for a replay, or from an engine without
    a queue); the channel deletes it once every part was delivered. `earlier`
    lists the rows still waiting for the same person when it was written: they
    go first.
    """

    replies: Sequence[Reply]
    language: Language
    reply_id: int | None = None
    earlier: tuple[int, ...] = ()


def encode_replies(replies: Sequence[Reply], language: Language) -> str:
    """`replies` and their language as JSON text (stored, encrypted, until delivered)."""
    items = []
    for reply in replies:
        item: dict[str, object] = {"text": reply.text}
        if reply.options:
            item["options"] = [[option.id, option.label] for option in reply.options]
        if reply.request_contact:
            item["request_contact"] = True
        if reply.document is not None:
            item["document"] = {
                "file_name": reply.document.file_name,
                "mime_type": reply.document.mime_type,
                "content": base64.b64encode(reply.document.content).decode("ascii"),
            }
        if reply.attachment is not None:
            item["attachment"] = [
                reply.attachment.channel.value,
                reply.attachment.kind.value,
                reply.attachment.ref,
            ]
        items.append(item)
    return json.dumps({"language": language.value, "replies": items}, ensure_ascii=False)


def decode_replies(encoded: str) -> tuple[list[Reply], Language]:
    """The inverse of `encode_replies`."""
    data = json.loads(encoded)
    replies: list[Reply] = []
    for item in data["replies"]:
        document = item.get("document")
        attachment = item.get("attachment")
        replies.append(
            Reply(
                text=item["text"],
                options=tuple(Option(id, label) for id, label in item.get("options", ())),
                request_contact=bool(item.get("request_contact", False)),
                document=None
                if document is None
                else Document(
                    file_name=document["file_name"],
                    content=base64.b64decode(document["content"]),
                    mime_type=document["mime_type"],
                ),
                attachment=None
                if attachment is None
                else FileRef(Channel(attachment[0]), EventKind(attachment[1]), attachment[2]),
            )
        )
    return replies, Language(data["language"])


class ConversationEngine(Protocol):
    """The single entry point every channel calls."""

    async def handle(self, event: InboundEvent) -> Sequence[Reply]:
        """Apply the event in one transaction and return the replies to send.

        Returns an empty sequence for a replayed update (already processed).
        """
        ...

    async def handle_queued(self, event: InboundEvent) -> QueuedReplies:
        """As `handle`, and the replies are also written to the reply queue in the
        same transaction, so a reply the platform refuses for a while is not lost."""
        ...

    async def language_of(self, channel: Channel, sender_id: str) -> Language:
        """The language the person chose (for channel-level texts like command menus)."""
        ...
