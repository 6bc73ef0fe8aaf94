"""The reply queue: replies to inbound events, kept until the platform accepted them.

The engine writes a person's replies here in the same transaction as the step
that produced them (`ConversationStore.queue_replies`, the hot path), held by
the writing process's lease. The channel sends them at once and deletes the row
(`forget`); a reply the platform refused for a while (5xx, timeout, 429,
WhatsApp 130429) stays with `parts_sent`, `attempts` and its next try
(`record_failure`) and is sent again without re-running the step. Rows whose
process died are taken over by `claim` once their lease has passed; a live
process renews the leases of the rows it still holds (`renew`) every third of
the lease, so a reply that waits long (behind the person's earlier replies, a
429, a slow send) is not taken over and sent a second time elsewhere.

Ordering rule of `claim` (as for the WhatsApp journal): a person's rows are
handed out only together with their earliest row, and never while any of
their rows is held by a live lease, so one person's replies never overtake
each other, also across processes. On PostgreSQL the rows are picked with
`FOR UPDATE SKIP LOCKED` and a person is kept only when the rows locked here
are the beginning of their rows as seen after the lock.

No commit happens here: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel
from storage.models import PendingReply

_MAX_ERROR_LENGTH: Final = 200


@dataclasses.dataclass(slots=True, frozen=True)
class ClaimedReply:
    """A queued row this process now holds (its payload still encrypted)."""

    id: int
    chat_id: str
    update_id: str
    payload_ciphertext: bytes
    parts_sent: int
    attempts: int
    created_at: datetime


@dataclasses.dataclass(slots=True, frozen=True)
class QueueBacklog:
    """How many replies wait, and since when (None when none)."""

    waiting: int
    oldest: datetime | None


async def claim(
    connection: AsyncConnection,
    channel: Channel,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    skip_chats: Iterable[str] = (),
) -> list[ClaimedReply]:
    """Take up to `limit` rows of `channel` that nobody holds, in id order, until `now + lease`.

    `skip_chats` are people this process is already delivering to (their new
    rows reach it directly).
    """
    if limit <= 0:
        return []
    reply = PendingReply
    held = select(reply.chat_id).where(
        reply.channel == channel, reply.lease_until.is_not(None), reply.lease_until >= now
    )
    skipped = list(skip_chats)
    query = (
        select(reply.id, reply.chat_id)
        .where(reply.channel == channel, reply.chat_id.not_in(held))
        .order_by(reply.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if skipped:
        query = query.where(reply.chat_id.not_in(skipped))
    picked = (await connection.execute(query)).all()
    if not picked:
        return []
    locked = {row.id for row in picked}
    rows = await connection.execute(
        select(reply.id, reply.chat_id, reply.lease_until, reply.not_before)
        .where(reply.channel == channel, reply.chat_id.in_({row.chat_id for row in picked}))
        .order_by(reply.id)
    )
    by_chat: dict[str, list[Any]] = {}
    for row in rows:
        by_chat.setdefault(row.chat_id, []).append(row)
    chosen: list[int] = []
    for chat_rows in by_chat.values():
        if any(row.lease_until is not None and row.lease_until >= now for row in chat_rows):
            continue  # held since our first look
        if chat_rows[0].not_before > now:
            continue  # its first reply waits for its retry: the rest waits behind it
        for row in chat_rows:
            if row.id not in locked:
                break  # the person's prefix ends: the rest waits for the next claim
            chosen.append(row.id)
    if not chosen:
        return []
    taken = await connection.execute(
        update(reply)
        .where(reply.id.in_(chosen))
        .values(lease_until=now + lease)
        .returning(
            reply.id,
            reply.chat_id,
            reply.update_id,
            reply.payload_ciphertext,
            reply.parts_sent,
            reply.attempts,
            reply.created_at,
        )
    )
    claimed = [
        ClaimedReply(
            id=row.id,
            chat_id=row.chat_id,
            update_id=row.update_id,
            payload_ciphertext=row.payload_ciphertext,
            parts_sent=row.parts_sent,
            attempts=row.attempts,
            created_at=row.created_at,
        )
        for row in taken
    ]
    return sorted(claimed, key=lambda item: item.id)


async def record_failure(
    connection: AsyncConnection,
    reply_id: int,
    *,
    parts_sent: int,
    attempts: int,
    retry_at: datetime,
    lease: timedelta,
    error: str,
) -> None:
    """Keep the row for another try at `retry_at`, still held by this process until then
    (plus `lease`, so a process that dies while waiting hands it on)."""
    await connection.execute(
        update(PendingReply)
        .where(PendingReply.id == reply_id)
        .values(
            parts_sent=parts_sent,
            attempts=attempts,
            not_before=retry_at,
            lease_until=retry_at + lease,
            last_error=error[:_MAX_ERROR_LENGTH],
        )
    )


async def forget(connection: AsyncConnection, reply_ids: Sequence[int]) -> int:
    """Forget delivered (or abandoned) rows; returns how many were deleted."""
    if not reply_ids:
        return 0
    result = await connection.execute(delete(PendingReply).where(PendingReply.id.in_(reply_ids)))
    return int(result.rowcount)


async def renew(connection: AsyncConnection, reply_ids: Sequence[int], *, until: datetime) -> int:
    """Keep holding rows this process still works on (waiting behind a person's earlier
    replies, being sent, or delivered and not yet deleted) until at least `until`, so
    `claim` elsewhere does not take them over while they are on their way. Rows handed
    back (no lease) stay handed back; a later lease (a retry's) is kept. Returns how many
    were renewed."""
    if not reply_ids:
        return 0
    result = await connection.execute(
        update(PendingReply)
        .where(
            PendingReply.id.in_(reply_ids),
            PendingReply.lease_until.is_not(None),
            PendingReply.lease_until < until,
        )
        .values(lease_until=until)
    )
    return int(result.rowcount)


async def release(connection: AsyncConnection, reply_ids: Sequence[int]) -> None:
    """Hand rows back untried: `claim` takes them in order with the person's earlier ones."""
    if reply_ids:
        await connection.execute(
            update(PendingReply).where(PendingReply.id.in_(reply_ids)).values(lease_until=None)
        )


async def drop_for_chat(connection: AsyncConnection, channel: Channel, chat_id: str) -> int:
    """Delete every reply waiting for one person (erasure); returns how many."""
    result = await connection.execute(
        delete(PendingReply).where(PendingReply.channel == channel, PendingReply.chat_id == chat_id)
    )
    return int(result.rowcount)


async def backlog(connection: AsyncConnection) -> QueueBacklog:
    """The number of waiting replies and the oldest one's time (for status and metrics)."""
    row = (await connection.execute(select(func.count(), func.min(PendingReply.created_at)))).one()
    return QueueBacklog(waiting=int(row[0]), oldest=row[1])
