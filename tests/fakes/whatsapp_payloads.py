"""Webhook bodies in the shape Meta's WhatsApp Cloud API posts them (current format).

Every message comes with its sender's `contacts[]` item: `user_id` (the
business-scoped user id, always there), `wa_id` (the phone number; absent for
a person with a username who hides it) and `profile.name`; the message repeats
them as `from` and `from_user_id`. Shapes follow Meta's webhook reference
(text, interactive button_reply / list_reply, a template's quick-reply
`button`, image, document, sticker, location, reaction, statuses with
`errors[]`).

    siti = WaUser(wa_id="6281234567890", user_id="ID.1402837465019283", name="Siti")
    body = encode(webhook(text(siti, "halo")))
    headers = {"X-Hub-Signature-256": sign(body, APP_SECRET)}
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

WABA_ID = "104839572910384"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE_NUMBER = "6281100223344"
APP_SECRET = "app-secret-for-tests"
VERIFY_TOKEN = "verify-token-for-tests"
_numbers = itertools.count(1)
_EPOCH = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


@dataclasses.dataclass(slots=True, frozen=True)
class WaUser:
    """A WhatsApp user as Meta names them; `wa_id=None`: the number is hidden."""

    wa_id: str | None
    user_id: str
    name: str = "Siti Aminah"
    username: str | None = None

    @property
    def sender_id(self) -> str:
        """The id the engine knows this person by."""
        return self.wa_id or self.user_id

    def contact(self) -> dict[str, Any]:
        profile: dict[str, Any] = {"name": self.name}
        if self.username is not None:
            profile["username"] = self.username
        contact: dict[str, Any] = {"profile": profile, "user_id": self.user_id}
        if self.wa_id is not None:
            contact["wa_id"] = self.wa_id
        return contact


SITI = WaUser(wa_id="6281234567890", user_id="ID.1402837465019283", name="Siti Aminah")
BUDI = WaUser(wa_id="6285298765432", user_id="ID.9983736251403921", name="Budi Santoso")
#: A person with a username whose number Meta does not share.
RINA = WaUser(wa_id=None, user_id="ID.5571029384756102", name="Rina", username="@rina.k")


@dataclasses.dataclass(slots=True, frozen=True)
class Incoming:
    """One `messages[]` item and who sent it."""

    user: WaUser
    message: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.message["id"])


def message_id() -> str:
    """A fresh wamid."""
    return f"wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjA{next(_numbers):012d}AA=="


def _timestamp(at: datetime | None) -> str:
    return str(int((at or _EPOCH).timestamp()))


def _message(
    user: WaUser,
    kind: str,
    content: dict[str, Any] | None,
    *,
    id: str | None = None,
    at: datetime | None = None,
    context: dict[str, Any] | None = None,
) -> Incoming:
    message: dict[str, Any] = {}
    if context is not None:
        message["context"] = context
    if user.wa_id is not None:
        message["from"] = user.wa_id
    message["from_user_id"] = user.user_id
    message["id"] = id or message_id()
    message["timestamp"] = _timestamp(at)
    message["type"] = kind
    if content is not None:
        message[kind] = content
    return Incoming(user, message)


def text(user: WaUser, body: str, **options: Any) -> Incoming:
    return _message(user, "text", {"body": body}, **options)


def button_reply(user: WaUser, option_id: str, title: str = "Pilih", **options: Any) -> Incoming:
    """A pressed reply button of an interactive message we sent."""
    return _message(
        user,
        "interactive",
        {"type": "button_reply", "button_reply": {"id": option_id, "title": title}},
        context={"from": DISPLAY_PHONE_NUMBER, "id": message_id()},
        **options,
    )


def list_reply(
    user: WaUser, option_id: str, title: str = "Pilih", description: str = "", **options: Any
) -> Incoming:
    """A chosen row of an interactive list message we sent."""
    row = {"id": option_id, "title": title}
    if description:
        row["description"] = description
    return _message(
        user,
        "interactive",
        {"type": "list_reply", "list_reply": row},
        context={"from": DISPLAY_PHONE_NUMBER, "id": message_id()},
        **options,
    )


def quick_reply(user: WaUser, payload: str, label: str, **options: Any) -> Incoming:
    """A pressed quick-reply button of a template message (`type: button`)."""
    return _message(
        user,
        "button",
        {"payload": payload, "text": label},
        context={"from": DISPLAY_PHONE_NUMBER, "id": message_id()},
        **options,
    )


def image(user: WaUser, media_id: str = "1479302848572610", caption: str | None = None) -> Incoming:
    content: dict[str, Any] = {
        "mime_type": "image/jpeg",
        "sha256": "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5Cg==",
        "id": media_id,
    }
    if caption is not None:
        content["caption"] = caption
    return _message(user, "image", content)


def document(
    user: WaUser,
    media_id: str = "2209183746502911",
    filename: str = "kpj_dinkes.xlsx",
    mime_type: str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    caption: str | None = None,
) -> Incoming:
    content: dict[str, Any] = {
        "filename": filename,
        "mime_type": mime_type,
        "sha256": "cXV1eGNvcmdlZ3JhdWx0Z2FycGx5Zm9vYmFyYmF6Cg==",
        "id": media_id,
    }
    if caption is not None:
        content["caption"] = caption
    return _message(user, "document", content)


def sticker(user: WaUser) -> Incoming:
    return _message(
        user,
        "sticker",
        {
            "mime_type": "image/webp",
            "sha256": "T21UNG5oalVoQ01JUE5tajdlZU9aZUNZalRYa0x4b092ODVPTUNGd1N1Yz0K",
            "id": "3311029384756021",
            "animated": False,
        },
    )


def location(user: WaUser) -> Incoming:
    return _message(
        user,
        "location",
        {"latitude": -3.7928, "longitude": 102.2608, "name": "Kantor Gubernur Bengkulu"},
    )


def audio(user: WaUser) -> Incoming:
    return _message(
        user,
        "audio",
        {"mime_type": "audio/ogg; codecs=opus", "sha256": "bTA0cEZm", "id": "4401", "voice": True},
    )


def reaction(user: WaUser, to_message_id: str, emoji: str = "\N{THUMBS UP SIGN}") -> Incoming:
    return _message(user, "reaction", {"message_id": to_message_id, "emoji": emoji})


def unknown(user: WaUser, kind: str = "poll") -> Incoming:
    """A type newer than our parser (Meta may add some)."""
    return _message(user, kind, {"question": "?"})


def webhook(*incoming: Incoming, statuses: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """One webhook body carrying `incoming` messages (their senders in `contacts`) and statuses."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": DISPLAY_PHONE_NUMBER,
            "phone_number_id": PHONE_NUMBER_ID,
        },
    }
    users: list[WaUser] = []
    for item in incoming:
        if item.user not in users:
            users.append(item.user)
    if users:
        value["contacts"] = [user.contact() for user in users]
    if incoming:
        value["messages"] = [item.message for item in incoming]
    status_list = list(statuses)
    if status_list:
        value["statuses"] = status_list
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
    }


def status(
    provider_message_id: str,
    state: str,
    user: WaUser = SITI,
    *,
    at: datetime | None = None,
    error_code: int | None = None,
    error_title: str = "Re-engagement message",
) -> dict[str, Any]:
    """A `statuses[]` item; with `error_code`, a failed status with Meta's `errors[]`."""
    item: dict[str, Any] = {
        "id": provider_message_id,
        "status": state,
        "timestamp": _timestamp(at),
        "recipient_user_id": user.user_id,
    }
    if user.wa_id is not None:
        item["recipient_id"] = user.wa_id
    if error_code is not None:
        item["errors"] = [
            {
                "code": error_code,
                "title": error_title,
                "message": error_title,
                "error_data": {
                    "details": "Message failed to send because more than 24 hours have passed "
                    "since the customer last replied to this number."
                },
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }
        ]
    else:
        item["conversation"] = {
            "id": "7270432eae37498234f4444b35ffc5",
            "origin": {"type": "service"},
        }
        item["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "service"}
    return item


def account_update() -> dict[str, Any]:
    """A change of another field (the business account itself): not for us."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "time": 1763694000,
                "changes": [
                    {
                        "field": "account_update",
                        "value": {
                            "phone_number": DISPLAY_PHONE_NUMBER,
                            "event": "VERIFIED_ACCOUNT",
                        },
                    }
                ],
            }
        ],
    }


def encode(document: dict[str, Any]) -> bytes:
    """The body bytes as Meta sends them (compact JSON, UTF-8)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    """The `X-Hub-Signature-256` header value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
