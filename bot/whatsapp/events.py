"""WhatsApp Cloud API webhook bodies in, journal entries and `InboundEvent`s out.

A small parser of Meta's JSON rather than pywa's update classes: pywa builds
one update from `entry[0].changes[0].value.messages[0]` and needs a client
object, while one webhook body may carry several entries, changes, messages
and statuses, and the journal wants each message's raw JSON (to replay it
later) more than a typed object.

The shape (Meta's current format, with business-scoped user ids):

    {"object": "whatsapp_business_account",
     "entry": [{"id": "<WABA id>", "changes": [{"field": "messages", "value": {
         "messaging_product": "whatsapp",
         "metadata": {"display_phone_number": "...", "phone_number_id": "..."},
         "contacts": [{"profile": {"name": "Siti", "username": "@siti"},
                       "wa_id": "6281234567890", "user_id": "ID.1234567890"}],
         "messages": [{"from": "6281234567890", "from_user_id": "ID.1234567890",
                       "id": "wamid....", "timestamp": "1763694000", "type": "text",
                       "text": {"body": "halo"}}],
         "statuses": [{"id": "wamid....", "status": "failed", "timestamp": "...",
                       "recipient_id": "...", "recipient_user_id": "...",
                       "errors": [{"code": 131047, "title": "Re-engagement message"}]}]}}]}]}

Who sent a message: `wa_id` (the phone number) when Meta gives it, else the
business-scoped user id (`user_id`; a person with a WhatsApp username may
hide their number). The engine's sender id is that value, and
`InboundEvent.sender_phone` is "+<wa_id>" only when the number is known.
A person who later hides their number arrives with their user id, which is a
different account for the engine; Meta keeps sending the number of people we
already talk to, which keeps that rare.

What is recorded: every message except reactions and system notices. A
reaction (an emoji on one of our messages) is not something to answer, and
answering it with "I cannot read that" would be noise; a system notice
("changed their number") is Meta's, not the person's. Everything else is
recorded and later becomes an event: text (a "/word" is a command, as on
Telegram), a pressed reply button or list row (CHOICE with the id we issued,
stale or not: the engine recognises old ids), a template's quick-reply button
(CHOICE with its payload), a photo, a document, and anything else as
UNSUPPORTED so the person hears what the bot can read. The first open of the
chat (`request_welcome`) is the start command.

Changes of other fields (account updates, template reviews) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from domain.vocabulary import Channel, DeliveryStatus
from handlers.commands import typed_event
from handlers.parsing import storable
from handlers.types import EventKind, InboundEvent
from storage.whatsapp_inbound import MAX_MESSAGE_ID_LENGTH, MAX_SENDER_ID_LENGTH, InboundMessage

logger = logging.getLogger(__name__)

#: Message types that are not recorded (see the module docstring).
IGNORED_TYPES: Final = frozenset({"reaction", "system"})


class PayloadError(ValueError):
    """The body is JSON but not a WhatsApp webhook envelope."""


@dataclasses.dataclass(slots=True, frozen=True)
class StatusUpdate:
    """What WhatsApp reports about a message we sent (a `statuses[]` item)."""

    message_id: str
    status: DeliveryStatus
    at: datetime
    error_code: int | None = None
    error_title: str | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class WebhookBatch:
    """What one webhook body carries: messages to record and statuses to apply."""

    messages: tuple[InboundMessage, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()
    #: Items left out: reactions, system notices, other fields, unusable entries.
    ignored: int = 0
    #: Changes left out whole because they are for another phone number.
    foreign: int = 0
    #: Ids of messages left out because their timestamp is older than allowed.
    too_old: tuple[str, ...] = ()


def parse_webhook(
    document: object,
    *,
    phone_number_id: str | None = None,
    not_before: datetime | None = None,
) -> WebhookBatch:
    """Split a decoded webhook body into messages to record and statuses to apply.

    With `phone_number_id`, a change whose `metadata.phone_number_id` is another
    (or missing) is left out whole, messages and statuses (counted in
    `foreign`): another number of the same WhatsApp Business Account is not
    ours to answer. With `not_before`, a message whose `timestamp` is earlier is
    left out (its id in `too_old`); a message without a timestamp is kept.
    Statuses are applied at any age: they only move an outbox row forwards.

    Raises `PayloadError` when the envelope itself is malformed (not an object,
    `entry`/`changes` not lists). A single message or status that cannot be
    used (no id, no sender, an unknown status) is skipped and counted as ignored.
    """
    if not isinstance(document, dict):
        raise PayloadError("the body is not a JSON object")
    if document.get("object") != "whatsapp_business_account":
        return WebhookBatch(ignored=1)
    messages: list[InboundMessage] = []
    statuses: list[StatusUpdate] = []
    too_old: list[str] = []
    ignored = 0
    foreign = 0
    for value in _message_values(document):
        if value is None:
            ignored += 1
            continue
        if phone_number_id is not None and _phone_number_id(value) != phone_number_id:
            foreign += 1
            continue
        contacts = [c for c in _list(value.get("contacts"), "contacts") if isinstance(c, dict)]
        for message in _list(value.get("messages"), "messages"):
            entry = _journal_entry(message, contacts)
            if entry is None:
                ignored += 1
            elif _sent_before(entry, not_before):
                too_old.append(entry.message_id)
            else:
                messages.append(entry)
        for item in _list(value.get("statuses"), "statuses"):
            status = _status(item)
            if status is None:
                ignored += 1
            else:
                statuses.append(status)
    return WebhookBatch(tuple(messages), tuple(statuses), ignored, foreign, tuple(too_old))


def _sent_before(message: InboundMessage, moment: datetime | None) -> bool:
    return moment is not None and message.sent_at is not None and message.sent_at < moment


def _phone_number_id(value: Mapping[str, Any]) -> str | None:
    metadata = value.get("metadata")
    return _text(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None


def _message_values(document: Mapping[str, Any]) -> Iterator[Mapping[str, Any] | None]:
    """The value of every change; None for a change of another field."""
    for entry in _list(document.get("entry"), "entry"):
        if not isinstance(entry, dict):
            raise PayloadError("an entry is not an object")
        for change in _list(entry.get("changes"), "changes"):
            if not isinstance(change, dict):
                raise PayloadError("a change is not an object")
            value = change.get("value")
            if change.get("field") != "messages":
                yield None
                continue
            if not isinstance(value, dict):
                raise PayloadError("a messages change has no value object")
            yield value


def _list(value: object, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{name} is not a list")
    return value


def _contact_for(
    message: Mapping[str, Any], contacts: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The `contacts[]` item of the message's sender ({} when there is none)."""
    for contact in contacts:
        if (contact.get("wa_id") and contact.get("wa_id") == message.get("from")) or (
            contact.get("user_id") and contact.get("user_id") == message.get("from_user_id")
        ):
            return dict(contact)
    return dict(contacts[0]) if len(contacts) == 1 else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _key(value: object, max_length: int) -> str | None:
    """An id a database column can hold as it is (no NUL or lone surrogate, not too long)."""
    text = _text(value)
    if text is None or len(text) > max_length or storable(text) != text:
        return None
    return text


def sender_of(message: Mapping[str, Any], contact: Mapping[str, Any]) -> tuple[str, str | None]:
    """(sender id for the engine, wa_id or None): the number when known, else the user id.

    Raises ValueError when the message names nobody.
    """
    wa_id = _text(contact.get("wa_id")) or _text(message.get("from"))
    user_id = _text(contact.get("user_id")) or _text(message.get("from_user_id"))
    sender = wa_id or user_id
    if sender is None:
        raise ValueError("message without a sender")
    return sender, wa_id


def _journal_entry(message: object, contacts: Sequence[Mapping[str, Any]]) -> InboundMessage | None:
    if not isinstance(message, dict):
        return None
    message_id = _key(message.get("id"), MAX_MESSAGE_ID_LENGTH)
    kind = _text(message.get("type"))
    if message_id is None or kind is None:
        # Refusing the whole request instead would make Meta retry it for days.
        logger.warning("webhook message without a usable id or type skipped")
        return None
    if kind in IGNORED_TYPES:
        logger.debug("whatsapp %s %s ignored", kind, message_id)
        return None
    contact = _contact_for(message, contacts)
    try:
        sender, _ = sender_of(message, contact)
    except ValueError:
        logger.warning("whatsapp message %s names no sender: skipped", message_id)
        return None
    if _key(sender, MAX_SENDER_ID_LENGTH) is None:
        # Our columns are this wide; refusing the whole request would make Meta retry for days.
        logger.error("whatsapp message %s: sender id unfit for the journal: skipped", message_id)
        return None
    document = {"message": message, "contact": contact}
    payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    if storable(payload) != payload:
        # A lone surrogate cannot be encrypted as UTF-8: keep it as a JSON escape (the
        # engine drops it, with NUL, from the event).
        payload = json.dumps(document, separators=(",", ":"))
    return InboundMessage(
        message_id=message_id,
        sender_id=sender,
        payload=payload,
        sent_at=_timestamp(message.get("timestamp")),
    )


def _timestamp(value: object) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(str(value)), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _status(item: object) -> StatusUpdate | None:
    if not isinstance(item, dict):
        return None
    message_id = _key(item.get("id"), MAX_MESSAGE_ID_LENGTH)
    try:
        status = DeliveryStatus(str(item.get("status", "")).lower())
    except ValueError:
        return None  # "played" (voice notes) and anything newer: nothing to record
    at = _timestamp(item.get("timestamp"))
    if message_id is None or at is None:
        return None
    code: int | None = None
    title: str | None = None
    errors = item.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        raw_code = errors[0].get("code")
        code = raw_code if isinstance(raw_code, int) else None
        title = _text(errors[0].get("title")) or _text(errors[0].get("message"))
        title = storable(title) if title is not None else None
    return StatusUpdate(message_id, status, at, code, title)


# --- a recorded message -> InboundEvent ----------------------------------------------


def to_event(message_id: str, payload: str, *, received_at: datetime) -> InboundEvent | None:
    """The engine's event for a recorded message (the journal's payload); None: nothing to do.

    `received_at` is used when the message carries no usable timestamp.
    Raises ValueError (json errors included) for a payload this module did not write.
    """
    document = json.loads(payload)
    message: dict[str, Any] = document["message"]
    contact: dict[str, Any] = document.get("contact") or {}
    kind = message.get("type")
    if kind in IGNORED_TYPES:
        return None
    sender, wa_id = sender_of(message, contact)
    profile = contact.get("profile")
    # A number only when it is one: str.isdigit() alone would also take "²".
    vouched = wa_id is not None and wa_id.isascii() and wa_id.isdigit()
    base = InboundEvent(
        channel=Channel.WHATSAPP,
        sender_id=sender,
        update_id=message_id,
        kind=EventKind.UNSUPPORTED,
        received_at=_timestamp(message.get("timestamp")) or received_at,
        sender_phone=f"+{wa_id}" if vouched else None,
        display_name=_text(profile.get("name")) if isinstance(profile, dict) else None,
    )
    body = message.get(kind) if isinstance(kind, str) else None
    body = body if isinstance(body, dict) else {}
    if kind == "text":
        text = body.get("body")
        if not isinstance(text, str):
            return base
        return typed_event(base, text)
    if kind == "interactive":
        reply = body.get(str(body.get("type")))
        if body.get("type") in ("button_reply", "list_reply") and isinstance(reply, dict):
            choice = _text(reply.get("id"))
            if choice is not None:
                return dataclasses.replace(base, kind=EventKind.CHOICE, choice_id=choice)
        return base
    if kind == "button":  # a quick-reply button of a template message
        choice = _text(body.get("payload"))
        if choice is None:
            return base
        return dataclasses.replace(
            base, kind=EventKind.CHOICE, choice_id=choice, text=_text(body.get("text"))
        )
    if kind == "image" and _text(body.get("id")):
        return dataclasses.replace(
            base, kind=EventKind.PHOTO, file_ref=body["id"], text=_text(body.get("caption"))
        )
    if kind == "document" and _text(body.get("id")):
        return dataclasses.replace(
            base,
            kind=EventKind.DOCUMENT,
            file_ref=body["id"],
            file_name=_text(body.get("filename")),
            text=_text(body.get("caption")),
        )
    if kind == "request_welcome":
        return dataclasses.replace(base, kind=EventKind.COMMAND, text="/start", command="start")
    return base
