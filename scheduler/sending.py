"""The contract between the outbox dispatcher and the channels that deliver.

A channel adapter implements `Sender`; the dispatcher (scheduler/dispatcher.py)
claims due outbox rows and hands each to the sender of its channel, then records
the `SendResult`. Senders never touch the database.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from domain.vocabulary import Channel


@dataclasses.dataclass(slots=True, frozen=True)
class OutgoingNotice:
    """One outbox row as a sender sees it."""

    outbox_id: int
    channel: Channel
    recipient: str
    kind: str
    body: str
    template: str | None
    params: dict[str, Any]


@dataclasses.dataclass(slots=True, frozen=True)
class Sent:
    """Delivered."""


@dataclasses.dataclass(slots=True, frozen=True)
class RetryAfter:
    """The platform asked us to slow down (Telegram 429 retry_after): pause the
    whole channel for `seconds`, then retry this row."""

    seconds: float
    error: str = "rate limited"


@dataclasses.dataclass(slots=True, frozen=True)
class Transient:
    """Network error, 5xx, timeout: retry later with exponential back-off."""

    error: str


@dataclasses.dataclass(slots=True, frozen=True)
class Permanent:
    """Retrying cannot help (blocked by the user, chat not found): the row fails."""

    error: str


SendResult = Sent | RetryAfter | Transient | Permanent


class Sender(Protocol):
    """Delivers notices on one channel."""

    channel: Channel

    async def send(self, notice: OutgoingNotice) -> SendResult:
        """Deliver one notice; never raises for platform errors (returns them)."""
        ...
