"""The contract between the outbox dispatcher and the channels that deliver.

A channel adapter implements `Sender`; the dispatcher (scheduler/dispatcher.py)
claims due outbox rows and hands each to the sender of its channel, then records
the `SendResult`. Senders never touch the database.

A send can carry a deadline (`write_by`): its first request must be written by
then, or not at all. The channels' HTTP connectors (bot/send_deadline.py) check
it once the connection is in hand and raise `PlaceMissed` when it passed: the
send's place in the send budget went by while a connection was being opened,
and writing it now would put it among the places other sends already fill.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Final, Protocol

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


# --- send deadlines --------------------------------------------------------------------

#: When the current task's next send must be written by (`time.monotonic()`), or None.
_DEADLINE: Final[ContextVar[float | None]] = ContextVar("sertakan_send_deadline", default=None)


class PlaceMissed(Exception):
    """The connection for a send was ready only after the send's deadline: nothing was
    written."""

    def __init__(self, late_s: float) -> None:
        super().__init__(f"connection ready {late_s * 1000:.0f} ms after the send's deadline")
        self.late_s = late_s


@contextlib.contextmanager
def write_by(deadline: float | None) -> Iterator[None]:
    """Within this block, the first HTTP request of this task through a connector that
    keeps deadlines (bot/send_deadline.py) is written only if its connection is ready
    by `deadline` (`time.monotonic()`; None: whenever). Only the first: a notice of
    several messages took its place for its first, and a later one stopped would leave
    the earlier ones sent twice on retry."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def claim_deadline() -> float | None:
    """The current block's deadline, once: later requests of the block have none."""
    deadline = _DEADLINE.get()
    if deadline is not None:
        _DEADLINE.set(None)
    return deadline
