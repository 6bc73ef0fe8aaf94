"""The contract between the outbox dispatcher and the channels that deliver.

A channel adapter implements `Sender`; the dispatcher (scheduler/dispatcher.py)
claims due outbox rows and hands each to the sender of its channel, then records
the `SendResult`. Senders never touch the database.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Protocol

from domain.vocabulary import Channel, Language


@dataclasses.dataclass(slots=True, frozen=True)
class OutgoingNotice:
    """One outbox row as a sender sees it.

    The last three fields serve channels with a service window (WhatsApp):
    `template_only` says the platform already refused the free-form text (send
    the approved template), `recipient_language` is the language of the
    recipient's account on this channel and `last_inbound_at` the time of their
    last message to us (both None when they never wrote on this channel).
    """

    outbox_id: int
    channel: Channel
    recipient: str
    kind: str
    body: str
    template: str | None
    params: dict[str, Any]
    template_only: bool = False
    recipient_language: Language | None = None
    last_inbound_at: datetime | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class Sent:
    """Delivered; `provider_message_id` is the platform's id of the message (WhatsApp
    `wamid`, kept for its status webhooks), None where the platform has none to report on."""

    provider_message_id: str | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class RetryAfter:
    """The platform asked us to slow down (Telegram 429 retry_after): pause the
    whole channel for `seconds`, then retry this row."""

    seconds: float
    error: str = "rate limited"


@dataclasses.dataclass(slots=True, frozen=True)
class Deferred:
    """The platform refused this recipient for now, not the channel (WhatsApp's pair
    rate limit, 131056): retry this row after `seconds` without pausing the channel
    and without counting an attempt (the message itself is fine)."""

    seconds: float
    error: str


@dataclasses.dataclass(slots=True, frozen=True)
class Transient:
    """Network error, 5xx, timeout: retry later with exponential back-off."""

    error: str


@dataclasses.dataclass(slots=True, frozen=True)
class Permanent:
    """Retrying cannot help (blocked by the user, chat not found): the row fails.

    `recipient_gone`: nothing at all can reach this person now (blocked, chat
    not found, WhatsApp 131026), as opposed to this one message being refused
    (a malformed request): a person's further replies are not tried.
    """

    error: str
    recipient_gone: bool = False


SendResult = Sent | RetryAfter | Deferred | Transient | Permanent


class Sender(Protocol):
    """Delivers notices on one channel."""

    channel: Channel

    async def send(self, notice: OutgoingNotice) -> SendResult:
        """Deliver one notice; never raises for platform errors (returns them). Within a
        `bot.send_deadline.write_by` block, a sender whose first request's connection came
        after the deadline raises `PlaceMissed`: nothing was sent."""
        ...
