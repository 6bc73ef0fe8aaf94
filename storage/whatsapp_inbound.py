"""The WhatsApp inbound journal and delivery statuses on the outbox.

The webhook answers Meta only after the messages of a request are recorded
here (`record`, one INSERT ... ON CONFLICT (message_id) DO NOTHING for the
batch): Meta retries a delivery for days and may send one message twice, or
two copies at once, and the unique `wamid` makes all of that one row. The
payload may hold a NIK, so it is stored encrypted (`NikCipher.encrypt_payload`).

A processor (bot/whatsapp/processor.py) then takes rows with `claim`, feeds
them to the engine one sender at a time in the order the person sent them
(WhatsApp's `timestamp`, kept as `sent_at`; equal or missing ones by arrival), and
records the outcome with `mark_processed`, `mark_failed` (retry later) or
`release` (handed back untried). Every outcome is fenced by the claim's
`claimed_until`: a processor that held rows past their lease, while another
took them over, changes nothing.

Ordering rule of `claim`: a sender's rows are handed out only together with
the sender's earliest unprocessed row, and never while any of the sender's
rows is held by a claim or waits for a retry. So one sender's messages are
never processed by two processors at once, nor out of order, also when a
failed message waits for its retry.

Sent order, not arrival order: Meta may deliver two messages typed a second
apart in two webhook posts, the later one first (the village and district
answers were stored swapped). With `hold` a sender's rows wait until their
newest row is `hold` old (the processor's `WHATSAPP_ORDER_HOLD_S`, 1 s by
default), so a message overtaken by a later one can still arrive and be put
first. The price is that much latency on every reply. A message that comes
later than the hold, after a message its sender sent later was processed, is
claimed marked `late`: the engine does not take it as an answer (the person
is told it arrived out of order and asked again), since applying it would
put an earlier answer into a later question. Timestamps are whole seconds:
messages sent within one second keep their arrival order.

`apply_status` moves `outbox.delivery_status` only forwards (by
`DeliveryStatus.rank`, in the UPDATE's own WHERE, so two status webhooks
racing each other cannot move it back either). A "failed" with error 131047
(the person's 24-hour window is closed) puts a free-form message back in the
queue as its approved template.

No commit happens here: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import (
    LargeBinary,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import DeliveryStatus, OutboxStatus
from storage.crypto import NikCipher
from storage.inbound_journal import insert_new, row_params
from storage.models import PERSON_ID_LENGTH, Outbox, UtcDateTime, WhatsappInbound

#: WhatsApp's error code for a free-form message outside the 24-hour customer-service window.
REENGAGEMENT_ERROR: Final = 131047
#: The journal's `sender_id` column (and `channel_account.external_id`) hold this many characters.
MAX_SENDER_ID_LENGTH: Final = PERSON_ID_LENGTH
#: The journal's `message_id` column holds this many characters (Meta's wamids use ~60).
MAX_MESSAGE_ID_LENGTH: Final = 128
_MAX_ERROR_LENGTH: Final = 200

StatusOutcome = Literal["updated", "stale", "unknown"]

#: A sender's rows in the order the person sent them; rows without a timestamp by arrival.
_SENT_ORDER = func.coalesce(WhatsappInbound.sent_at, WhatsappInbound.received_at)


@dataclasses.dataclass(slots=True, frozen=True)
class InboundMessage:
    """One message to record: the platform's id, who sent it, and its payload (plain JSON text).

    `sent_at` is WhatsApp's `timestamp` (when the person sent it, whole
    seconds); a sender's messages are applied in that order.
    """

    message_id: str
    sender_id: str
    payload: str
    sent_at: datetime | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class ClaimedMessage:
    """A journal row this processor holds until `claimed_until` (the claim's fencing token).

    `attempts` counts the failed tries before this claim; the payload is still
    encrypted (decrypt it with the same `NikCipher` that recorded it).
    """

    id: int
    message_id: str
    sender_id: str
    payload_ciphertext: bytes
    received_at: datetime
    attempts: int
    claimed_until: datetime
    #: WhatsApp's `timestamp` of the message (None: it had none).
    sent_at: datetime | None = None
    #: Sent before a message of the same sender that was already processed (it came
    #: later than the hold allowed for): not to be applied as an answer.
    late: bool = False


async def record(
    connection: AsyncConnection,
    messages: Sequence[InboundMessage],
    *,
    cipher: NikCipher,
    now: datetime,
) -> list[str]:
    """Store `messages` in the caller's transaction; return the message ids newly recorded.

    One statement for the whole batch (a multi-row INSERT ... ON CONFLICT
    (message_id) DO NOTHING RETURNING). A message id already in the journal (a
    redelivery, or a copy recorded a moment ago by a concurrent request) is
    left alone and not returned; on PostgreSQL a concurrent insert of the same
    id waits for the other transaction and then finds it. Raises ValueError
    for a sender id longer than `MAX_SENDER_ID_LENGTH` (the column's size).
    """
    unique: dict[str, InboundMessage] = {}
    for message in messages:
        if len(message.sender_id) > MAX_SENDER_ID_LENGTH:
            raise ValueError(f"sender id of {len(message.sender_id)} characters does not fit")
        unique.setdefault(message.message_id, message)
    if not unique:
        return []
    params: dict[str, Any] = {"received_at": now, "attempts": 0}
    params.update(
        row_params(
            [
                {
                    "message_id": message.message_id,
                    "sender_id": message.sender_id,
                    "payload_ciphertext": cipher.encrypt_payload(message.payload),
                    "sent_at": message.sent_at,
                }
                for message in unique.values()
            ]
        )
    )
    statement = insert_new("whatsapp_inbound", "message_id", _PER_ROW, _SHARED, len(unique))
    result = await connection.execute(statement, params)
    recorded = set(result.scalars())
    # RETURNING keeps no order; answer in the order given.
    return [message_id for message_id in unique if message_id in recorded]


_PER_ROW: Final = (
    ("message_id", None),
    ("sender_id", None),
    ("payload_ciphertext", LargeBinary),
    ("sent_at", UtcDateTime),
)
_SHARED: Final = (("received_at", UtcDateTime), ("attempts", None))


async def claim(
    connection: AsyncConnection,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    hold: timedelta = timedelta(0),
) -> list[ClaimedMessage]:
    """Claim up to `limit` unprocessed rows until `now + lease`; the caller commits.

    A sender is skipped while any of their unprocessed rows is held (by a live
    claim, or waiting for a retry), and while their newest row arrived less
    than `hold` ago (more of their messages may be on the way, possibly sent
    earlier); otherwise their rows are taken as a prefix of their unprocessed
    rows in the order the person sent them (`sent_at`, then arrival). A
    crashed processor's rows are taken again once their lease has passed.
    The result is in that order per sender.

    On PostgreSQL the rows are picked with `FOR UPDATE SKIP LOCKED`, and a
    sender is kept only when the rows locked here are the beginning of their
    pending rows as seen after the lock (READ COMMITTED: a newer snapshot),
    so two processes claiming at once never split one sender between them.
    SQLite serialises claims with `BEGIN IMMEDIATE`.
    """
    if limit <= 0:
        return []
    inbound = WhatsappInbound
    held_senders = select(inbound.sender_id).where(
        inbound.processed_at.is_(None),
        or_(inbound.claimed_until >= now, inbound.received_at > now - hold),
    )
    picked = (
        await connection.execute(
            select(inbound.id, inbound.sender_id)
            .where(inbound.processed_at.is_(None), inbound.sender_id.not_in(held_senders))
            .order_by(inbound.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not picked:
        return []
    locked = {row.id for row in picked}
    pending = await connection.execute(
        select(inbound.id, inbound.sender_id, inbound.claimed_until, inbound.received_at)
        .where(
            inbound.processed_at.is_(None),
            inbound.sender_id.in_({row.sender_id for row in picked}),
        )
        .order_by(_SENT_ORDER, inbound.id)
    )
    by_sender: dict[str, list[Any]] = {}
    for row in pending:
        by_sender.setdefault(row.sender_id, []).append(row)
    chosen: list[int] = []
    for rows in by_sender.values():
        if any(
            (row.claimed_until is not None and row.claimed_until >= now)
            or row.received_at > now - hold
            for row in rows
        ):
            continue  # held since our first look (another claim or a new row committed meanwhile)
        for row in rows:
            if row.id not in locked:
                break  # the sender's prefix ends: the rest waits for the next claim
            chosen.append(row.id)
    return await _take(connection, chosen, now=now, lease=lease)


async def _take(
    connection: AsyncConnection, ids: list[int], *, now: datetime, lease: timedelta
) -> list[ClaimedMessage]:
    if not ids:
        return []
    claimed_until = now + lease
    inbound = WhatsappInbound
    rows = (
        await connection.execute(
            update(inbound)
            .where(inbound.id.in_(ids))
            .values(claimed_until=claimed_until)
            .returning(
                inbound.id,
                inbound.message_id,
                inbound.sender_id,
                inbound.payload_ciphertext,
                inbound.received_at,
                inbound.sent_at,
                inbound.attempts,
            )
        )
    ).all()
    newest_done = await _newest_processed(connection, {row.sender_id for row in rows})
    return [
        ClaimedMessage(
            id=row.id,
            message_id=row.message_id,
            sender_id=row.sender_id,
            payload_ciphertext=row.payload_ciphertext,
            received_at=row.received_at,
            attempts=row.attempts,
            claimed_until=claimed_until,
            sent_at=row.sent_at,
            late=_sent_before(row.sent_at, newest_done.get(row.sender_id)),
        )
        # RETURNING keeps no order; the `_SENT_ORDER` of `claim`, per sender.
        for row in sorted(rows, key=lambda r: (r.sent_at or r.received_at, r.id))
    ]


async def _newest_processed(connection: AsyncConnection, senders: set[str]) -> dict[str, datetime]:
    """Per sender, the latest `sent_at` among their processed (or parked) rows."""
    if not senders:
        return {}
    inbound = WhatsappInbound
    rows = await connection.execute(
        select(inbound.sender_id, func.max(inbound.sent_at))
        .where(inbound.sender_id.in_(senders), inbound.processed_at.is_not(None))
        .group_by(inbound.sender_id)
    )
    return {sender: newest for sender, newest in rows if newest is not None}


def _sent_before(sent_at: datetime | None, newest_done: datetime | None) -> bool:
    return sent_at is not None and newest_done is not None and sent_at < newest_done


async def hold_ends(
    connection: AsyncConnection, *, now: datetime, hold: timedelta
) -> datetime | None:
    """The earliest time a sender now held by `hold` (see `claim`) may be free; None: nobody.

    A lower bound (the oldest recent arrival plus `hold`): a processor looking
    again then never looks too late, at worst once too early.
    """
    if hold <= timedelta(0):
        return None
    oldest = await connection.scalar(
        select(func.min(WhatsappInbound.received_at)).where(
            WhatsappInbound.processed_at.is_(None), WhatsappInbound.received_at > now - hold
        )
    )
    return None if oldest is None else oldest + hold


def _held(claimed: ClaimedMessage) -> Any:
    return and_(
        WhatsappInbound.id == claimed.id,
        WhatsappInbound.processed_at.is_(None),
        WhatsappInbound.claimed_until == claimed.claimed_until,
    )


async def mark_processed(
    connection: AsyncConnection,
    claimed: ClaimedMessage,
    *,
    now: datetime,
    error: str | None = None,
) -> bool:
    """The row is done (handled, or parked when `error` is given); False when the claim was lost.

    With `error` the failed attempt is counted and its reason kept.
    """
    values: dict[str, Any] = {"processed_at": now, "claimed_until": None}
    if error is not None:
        values["attempts"] = WhatsappInbound.attempts + 1
        values["last_error"] = error[:_MAX_ERROR_LENGTH]
    result = await connection.execute(update(WhatsappInbound).where(_held(claimed)).values(values))
    return bool(result.rowcount)


async def mark_all_processed(
    connection: AsyncConnection, claimed: Sequence[ClaimedMessage], *, now: datetime
) -> int:
    """`mark_processed` for many rows at once (one UPDATE per claim); how many were still ours."""
    by_claim: dict[datetime, list[int]] = {}
    for item in claimed:
        by_claim.setdefault(item.claimed_until, []).append(item.id)
    marked = 0
    for claimed_until, ids in by_claim.items():
        result = await connection.execute(
            update(WhatsappInbound)
            .where(
                WhatsappInbound.id.in_(ids),
                WhatsappInbound.processed_at.is_(None),
                WhatsappInbound.claimed_until == claimed_until,
            )
            .values(processed_at=now, claimed_until=None)
        )
        marked += result.rowcount
    return marked


async def mark_failed(
    connection: AsyncConnection,
    claimed: ClaimedMessage,
    *,
    error: str,
    retry_at: datetime,
) -> bool:
    """Count a failed attempt and hold the row (and so its sender) until `retry_at`.

    False when the claim was lost (nothing changed).
    """
    result = await connection.execute(
        update(WhatsappInbound)
        .where(_held(claimed))
        .values(
            attempts=WhatsappInbound.attempts + 1,
            last_error=error[:_MAX_ERROR_LENGTH],
            claimed_until=retry_at,
        )
    )
    return bool(result.rowcount)


async def release(connection: AsyncConnection, claimed: Sequence[ClaimedMessage]) -> int:
    """Hand rows back untried (a sender's later rows after a failure); returns how many."""
    released = 0
    for item in claimed:
        result = await connection.execute(
            update(WhatsappInbound).where(_held(item)).values(claimed_until=None)
        )
        released += result.rowcount
    return released


async def prune_processed(connection: AsyncConnection, *, before: datetime) -> int:
    """Delete rows processed before `before`; returns how many.

    Keep them at least as long as Meta redelivers (days) and no longer than the
    engine's own update-id dedupe (`processed_update`) lasts: a redelivery
    after the prune is recorded again, and only the engine then stops it.
    """
    result = await connection.execute(
        delete(WhatsappInbound).where(
            WhatsappInbound.processed_at.is_not(None), WhatsappInbound.processed_at < before
        )
    )
    return result.rowcount


async def pending_count(connection: AsyncConnection) -> int:
    """How many recorded messages are not processed yet (held or not)."""
    count = await connection.scalar(
        select(func.count())
        .select_from(WhatsappInbound)
        .where(WhatsappInbound.processed_at.is_(None))
    )
    return int(count or 0)


_RANK = case(
    {status: status.rank for status in DeliveryStatus},
    value=Outbox.delivery_status,
    else_=0,
)


async def apply_status(
    connection: AsyncConnection,
    provider_message_id: str,
    status: DeliveryStatus,
    at: datetime,
    error_code: int | None = None,
    *,
    now: datetime,
    error_title: str | None = None,
) -> StatusOutcome:
    """Record what WhatsApp reports about a message we sent; never moves a status back.

    "updated": the outbox row took the status; "stale": the row already has
    this status or a later one (statuses arrive in any order); "unknown": no
    row has this provider message id (not ours, not committed yet, or pruned).

    A "failed" status keeps its code and title in `last_error`. With code
    131047 (the 24-hour window closed before the free-form message arrived) a
    row that was sent free-form goes back to pending, due `now`, as
    template-only; its provider id and delivery status are cleared so the
    template's own statuses start afresh. A template-only row that fails again
    is not re-queued.
    """
    outbox = Outbox
    forward = and_(
        outbox.provider_message_id == provider_message_id,
        or_(outbox.delivery_status.is_(None), status.rank > _RANK),
    )
    if status is DeliveryStatus.FAILED:
        reason = f"{error_code}: {error_title or 'delivery failed'}"[:_MAX_ERROR_LENGTH]
        if error_code == REENGAGEMENT_ERROR:
            resent = await connection.execute(
                update(outbox)
                .where(
                    forward,
                    outbox.template_only.is_(False),
                    outbox.status == OutboxStatus.SENT,
                )
                .values(
                    template_only=True,
                    status=OutboxStatus.PENDING,
                    not_before=now,
                    claimed_until=None,
                    provider_message_id=None,
                    delivery_status=None,
                    delivery_status_at=None,
                    last_error=f"{reason} (re-sent as template)"[:_MAX_ERROR_LENGTH],
                )
            )
            if resent.rowcount:
                return "updated"
        result = await connection.execute(
            update(outbox)
            .where(forward)
            .values(delivery_status=status, delivery_status_at=at, last_error=reason)
        )
    else:
        result = await connection.execute(
            update(outbox).where(forward).values(delivery_status=status, delivery_status_at=at)
        )
    if result.rowcount:
        return "updated"
    known = await connection.scalar(
        select(outbox.id).where(outbox.provider_message_id == provider_message_id).limit(1)
    )
    return "stale" if known is not None else "unknown"
