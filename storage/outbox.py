"""The durable outbox (PRODUCT 5): every proactive message is a row written in the
transaction of the change that caused it, then sent by the dispatcher
(scheduler/dispatcher.py).

`enqueue` is the only way in. Its `dedupe_key` is unique: planning the same
notice twice (a replayed import, two processes planning one digest) leaves one
row, so the person gets it once.

The way out, for the dispatcher: `claim_due` takes due rows (status `sending`,
`claimed_until` = now + lease), and after each send exactly one of `mark_sent`,
`mark_retry` or `mark_failed` records the outcome in its own short transaction.
A row whose dispatcher died keeps status `sending` until its lease passes;
then `claim_due` hands it out again.

Delivery is exactly once except for one window: when a process dies after the
platform accepted a message and before the outcome was committed, the row is
sent again after its lease (Telegram has no idempotency key to prevent that).
Committing row by row right after each send keeps that window to the messages
in flight at the moment of the crash.

Every outcome function is fenced by the claim (`claimed_until` of the
`ClaimedNotice`): a dispatcher that held a row past its lease, while another one
re-claimed it, changes nothing (the function returns False).

For a channel with a service window (WhatsApp) a claim also carries what the
sender needs to choose between free text and the approved template: the row's
`template_only`, and the recipient's language and last inbound time on that
channel (their `channel_account` and its `conversation.updated_at`), read with
one extra set-based query per claim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel, DeliveryStatus, Language, OutboxStatus
from storage.db import insert_for
from storage.models import ChannelAccount, Conversation, Outbox


@dataclasses.dataclass(slots=True, frozen=True)
class Notice:
    """One proactive message to plan.

    `body` is the text in the recipient's language; `template` and `params` name
    the approved template a channel with a service window (WhatsApp) must use
    outside it.
    """

    dedupe_key: str
    channel: Channel
    recipient: str
    kind: str
    body: str
    template: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


async def enqueue(
    connection: AsyncConnection,
    notice: Notice,
    *,
    now: datetime,
    not_before: datetime | None = None,
) -> bool:
    """Add `notice` to the outbox in the caller's transaction.

    Returns False when a row with the same dedupe key already exists (nothing
    is written then).
    """
    statement = (
        insert_for(connection.dialect.name)(Outbox)
        .values(
            dedupe_key=notice.dedupe_key,
            channel=notice.channel,
            recipient=notice.recipient,
            kind=notice.kind,
            body=notice.body,
            template=notice.template,
            params=notice.params,
            status=OutboxStatus.PENDING,
            not_before=not_before or now,
            attempts=0,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    result = await connection.execute(statement)
    return bool(result.rowcount)


@dataclasses.dataclass(slots=True, frozen=True)
class ClaimedNotice:
    """A row this dispatcher holds until `claimed_until` (the claim's fencing token).

    `attempts` counts the sends already tried before this claim.
    `recipient_language` and `last_inbound_at` come from the recipient's
    account on the row's channel (None when they never wrote there).
    """

    id: int
    channel: Channel
    recipient: str
    kind: str
    body: str
    template: str | None
    params: dict[str, Any]
    attempts: int
    claimed_until: datetime
    template_only: bool = False
    recipient_language: Language | None = None
    last_inbound_at: datetime | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class FailedNotice:
    """A row that ended in `failed`, as operators see it."""

    id: int
    channel: Channel
    recipient: str
    kind: str
    attempts: int
    last_error: str | None
    created_at: datetime


_CLAIMED_COLUMNS = (
    Outbox.id,
    Outbox.channel,
    Outbox.recipient,
    Outbox.kind,
    Outbox.body,
    Outbox.template,
    Outbox.params,
    Outbox.attempts,
    Outbox.not_before,
    Outbox.template_only,
)


async def claim_due(
    connection: AsyncConnection,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    channels: Collection[Channel] | None = None,
) -> list[ClaimedNotice]:
    """Claim up to `limit` due rows, oldest `not_before` first; the caller commits.

    Due: status pending with `not_before <= now`, or status sending whose
    `claimed_until` passed (a crashed dispatcher's rows). `channels` restricts
    the claim (channels without a sender, or paused, are left alone).

    On PostgreSQL the rows are picked with `FOR UPDATE SKIP LOCKED`, so several
    processes claiming at once never get the same row. SQLite renders no
    locking clause; there the engine opens every transaction with
    `BEGIN IMMEDIATE`, which serialises claims (and several dispatcher
    processes on one SQLite file are not supported).

    The recipients' language and last inbound time are read afterwards in one
    query over the claimed (channel, recipient) pairs.
    """
    if limit <= 0 or (channels is not None and not channels):
        return []
    due = or_(
        and_(Outbox.status == OutboxStatus.PENDING, Outbox.not_before <= now),
        and_(Outbox.status == OutboxStatus.SENDING, Outbox.claimed_until < now),
    )
    if channels is not None:
        due = and_(due, Outbox.channel.in_(list(channels)))
    picked = (
        select(Outbox.id)
        .where(due)
        .order_by(Outbox.not_before, Outbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed_until = now + lease
    statement = (
        update(Outbox)
        .where(Outbox.id.in_(picked.scalar_subquery()))
        .values(status=OutboxStatus.SENDING, claimed_until=claimed_until)
        .returning(*_CLAIMED_COLUMNS)
    )
    # RETURNING keeps no order.
    rows = sorted((await connection.execute(statement)).all(), key=lambda r: (r.not_before, r.id))
    pairs = {(Channel(row.channel), row.recipient) for row in rows}
    accounts = await _recipients(connection, pairs)
    claims: list[ClaimedNotice] = []
    for row in rows:
        account = accounts.get((Channel(row.channel), row.recipient))
        language, last_inbound_at = account if account is not None else (None, None)
        claims.append(
            ClaimedNotice(
                id=row.id,
                channel=row.channel,
                recipient=row.recipient,
                kind=row.kind,
                body=row.body,
                template=row.template,
                params=dict(row.params or {}),
                attempts=row.attempts,
                claimed_until=claimed_until,
                template_only=bool(row.template_only),
                recipient_language=language,
                last_inbound_at=last_inbound_at,
            )
        )
    return claims


async def _recipients(
    connection: AsyncConnection, pairs: Collection[tuple[Channel, str]]
) -> dict[tuple[Channel, str], tuple[Language, datetime | None]]:
    """Language and last inbound time of the accounts behind (channel, external id) pairs.

    One SELECT: per channel, `external_id IN (...)`, OR-ed (no row-value IN,
    which older SQLite lacks). Pairs without an account are simply absent.
    """
    if not pairs:
        return {}
    by_channel: dict[Channel, set[str]] = {}
    for channel, recipient in pairs:
        by_channel.setdefault(channel, set()).add(recipient)
    wanted = or_(
        *(
            and_(ChannelAccount.channel == channel, ChannelAccount.external_id.in_(sorted(ids)))
            for channel, ids in by_channel.items()
        )
    )
    rows = await connection.execute(
        select(
            ChannelAccount.channel,
            ChannelAccount.external_id,
            ChannelAccount.language,
            Conversation.updated_at,
        )
        .outerjoin(Conversation, Conversation.channel_account_id == ChannelAccount.id)
        .where(wanted)
    )
    return {
        (Channel(channel), external_id): (Language(language), updated_at)
        for channel, external_id, language, updated_at in rows.tuples()
    }


def _held(claim: ClaimedNotice) -> Any:
    return and_(
        Outbox.id == claim.id,
        Outbox.status == OutboxStatus.SENDING,
        Outbox.claimed_until == claim.claimed_until,
    )


async def mark_sent(
    connection: AsyncConnection,
    claim: ClaimedNotice,
    *,
    now: datetime,
    provider_message_id: str | None = None,
) -> bool:
    """Record a delivery; False when the claim was lost (nothing changed).

    `provider_message_id` (WhatsApp's `wamid`) is stored for the status
    webhooks, and `delivery_status` starts at "sent" as of `now`. A re-sent row
    (a requeued failure, a template after 131047) is a new message: both are
    overwritten.
    """
    result = await connection.execute(
        update(Outbox)
        .where(_held(claim))
        .values(
            status=OutboxStatus.SENT,
            sent_at=now,
            attempts=Outbox.attempts + 1,
            claimed_until=None,
            provider_message_id=provider_message_id,
            delivery_status=DeliveryStatus.SENT,
            delivery_status_at=now,
        )
    )
    return bool(result.rowcount)


async def mark_retry(
    connection: AsyncConnection,
    claim: ClaimedNotice,
    *,
    not_before: datetime,
    error: str | None,
    count_attempt: bool = True,
) -> bool:
    """Put the row back to pending until `not_before`; False when the claim was lost.

    `count_attempt=False` hands a row back that was not tried, or was refused
    only for our pace (a platform's retry_after, a dispatcher stopping):
    `attempts` stays. `error=None` keeps the previous `last_error`.
    """
    values: dict[str, Any] = {
        "status": OutboxStatus.PENDING,
        "not_before": not_before,
        "claimed_until": None,
    }
    if count_attempt:
        values["attempts"] = Outbox.attempts + 1
    if error is not None:
        values["last_error"] = error
    result = await connection.execute(update(Outbox).where(_held(claim)).values(**values))
    return bool(result.rowcount)


async def hand_back(
    connection: AsyncConnection, rows: Sequence[tuple[ClaimedNotice, datetime]]
) -> None:
    """Put claimed rows back to pending, each until its datetime, without counting an attempt.

    `mark_retry(..., error=None, count_attempt=False)` for many rows in one
    executemany statement (a dispatcher handing back a batch's surplus rows of
    one recipient). Fenced by each claim like the other outcomes.
    """
    if not rows:
        return
    statement = (
        update(Outbox)
        .where(
            Outbox.id == bindparam("b_id"),
            Outbox.status == OutboxStatus.SENDING,
            Outbox.claimed_until == bindparam("b_claimed_until"),
        )
        .values(
            status=OutboxStatus.PENDING, not_before=bindparam("b_not_before"), claimed_until=None
        )
    )
    await connection.execute(
        statement,
        [
            {"b_id": claim.id, "b_claimed_until": claim.claimed_until, "b_not_before": not_before}
            for claim, not_before in rows
        ],
    )


async def mark_failed(connection: AsyncConnection, claim: ClaimedNotice, *, error: str) -> bool:
    """End the row in `failed` with the reason; False when the claim was lost."""
    result = await connection.execute(
        update(Outbox)
        .where(_held(claim))
        .values(
            status=OutboxStatus.FAILED,
            attempts=Outbox.attempts + 1,
            last_error=error,
            claimed_until=None,
        )
    )
    return bool(result.rowcount)


#: Undeliverable: failed here, or accepted by the platform and reported failed later
#: (a WhatsApp status webhook, `last_error` holding Meta's code and title).
_FAILED = or_(Outbox.status == OutboxStatus.FAILED, Outbox.delivery_status == DeliveryStatus.FAILED)


async def list_failed(connection: AsyncConnection, *, limit: int = 100) -> list[FailedNotice]:
    """Failed rows (also those the platform reported failed after accepting them), newest first."""
    rows = await connection.execute(
        select(
            Outbox.id,
            Outbox.channel,
            Outbox.recipient,
            Outbox.kind,
            Outbox.attempts,
            Outbox.last_error,
            Outbox.created_at,
        )
        .where(_FAILED)
        .order_by(Outbox.created_at.desc(), Outbox.id.desc())
        .limit(limit)
    )
    return [
        FailedNotice(
            id=row.id,
            channel=row.channel,
            recipient=row.recipient,
            kind=row.kind,
            attempts=row.attempts,
            last_error=row.last_error,
            created_at=row.created_at,
        )
        for row in rows
    ]


async def counts_by_status(connection: AsyncConnection) -> dict[OutboxStatus, int]:
    """How many rows are in each status (every status present, zeros included)."""
    counts = dict.fromkeys(OutboxStatus, 0)
    rows = await connection.execute(select(Outbox.status, func.count()).group_by(Outbox.status))
    for status, count in rows.tuples():
        counts[status] = int(count)
    return counts


async def requeue_failed(connection: AsyncConnection, outbox_id: int, *, now: datetime) -> bool:
    """Put a failed row back to pending, due now, with a fresh attempt budget.

    Also a row the platform reported failed after accepting it (its delivery
    status is cleared; the next send gets a new message id). `last_error` is
    kept until the next outcome. False when no failed row has that id.
    """
    result = await connection.execute(
        update(Outbox)
        .where(Outbox.id == outbox_id, _FAILED)
        .values(
            status=OutboxStatus.PENDING,
            not_before=now,
            attempts=0,
            claimed_until=None,
            delivery_status=None,
            delivery_status_at=None,
        )
    )
    return bool(result.rowcount)
