"""Housekeeping: keep the per-event tables small, delete personal data past retention.

Run nightly by `scheduler.runner` (`housekeeping`): processed update ids and
handled WhatsApp journal rows go after their dedupe window
(`prune_processed_updates`); sent and failed notices and parked updates go
after the retention period (`apply_retention`, SERTAKAN_RETENTION_DAYS, UU
PDP: personal data kept no longer than its purpose needs); then, on
PostgreSQL, the tables holding personal data are vacuumed
(`vacuum_personal_tables`) so the deleted and overwritten row versions (also
an erasure's) are reclaimed rather than left in the files.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain.vocabulary import OutboxStatus
from storage import tickets
from storage.models import (
    Asn,
    ChannelAccount,
    Conversation,
    FailedUpdate,
    Outbox,
    PendingReply,
    ProcessedUpdate,
    Sponsorship,
    Ticket,
    TicketMessage,
    WhatsappInbound,
    Worker,
)
from storage.whatsapp_inbound import prune_processed

log = logging.getLogger(__name__)

#: Tables that hold personal data (names, numbers, NIK ciphertexts, chat drafts,
#: notice texts, encrypted payloads): vacuumed after the nightly deletes.
PERSONAL_DATA_TABLES: tuple[str, ...] = tuple(
    str(model.__tablename__)
    for model in (
        Worker,
        Sponsorship,
        Asn,
        ChannelAccount,
        Conversation,
        Outbox,
        WhatsappInbound,
        FailedUpdate,
        ProcessedUpdate,
        PendingReply,
        Ticket,
        TicketMessage,
    )
)


async def prune_processed_updates(
    sessionmaker: async_sessionmaker[AsyncSession], *, older_than: datetime
) -> int:
    """Forget inbound update ids processed before `older_than`; returns how many.

    Platforms redeliver for a bounded time (Telegram until the offset is
    confirmed, WhatsApp for up to 7 days), so ids older than the retention
    window can no longer come back. The WhatsApp journal's processed rows go
    with the same cut-off (never earlier than the engine's own dedupe).
    """
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            delete(ProcessedUpdate).where(ProcessedUpdate.processed_at < older_than)
        )
        await prune_processed(await session.connection(), before=older_than)
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclasses.dataclass(slots=True, frozen=True)
class RetentionResult:
    """Rows deleted by one retention run."""

    notices: int
    parked_updates: int
    #: Replies no process sent in all that time (their channel was switched off).
    replies: int = 0
    #: Questions ("Tanya PIC") closed before the cut-off, with their threads.
    questions: int = 0


async def apply_retention(
    sessionmaker: async_sessionmaker[AsyncSession], *, older_than: datetime
) -> RetentionResult:
    """Delete finished notices and parked updates from before `older_than` (PRODUCT 7, UU PDP).

    Notices: `sent` ones by their send time, `failed` ones by their creation
    (pending and in-flight rows are never touched, however old). Their
    dedupe keys go with them, so the period must outlast any planner's chance
    to plan the same notice again (a reminder phase lasts a month; the
    setting's minimum keeps a margin). Parked updates by the time they were
    parked: an operator had the period to look at them. Replies still queued
    by the time they were written: a running channel drops them after
    REPLY_MAX_AGE_HOURS, so only a channel switched off leaves any this old.
    Questions to a PIC by the time they were closed (open ones stay).
    """
    async with sessionmaker() as session, session.begin():
        notices = await session.execute(
            delete(Outbox).where(
                Outbox.status.in_((OutboxStatus.SENT, OutboxStatus.FAILED)),
                func.coalesce(Outbox.sent_at, Outbox.created_at) < older_than,
            )
        )
        parked = await session.execute(
            delete(FailedUpdate).where(FailedUpdate.failed_at < older_than)
        )
        replies = await session.execute(
            delete(PendingReply).where(PendingReply.created_at < older_than)
        )
        questions = await tickets.delete_closed_before(await session.connection(), older_than)
    return RetentionResult(
        notices=int(notices.rowcount),  # type: ignore[attr-defined]
        parked_updates=int(parked.rowcount),  # type: ignore[attr-defined]
        replies=int(replies.rowcount),  # type: ignore[attr-defined]
        questions=questions,
    )


async def vacuum_personal_tables(
    database: AsyncEngine, tables: Sequence[str] = PERSONAL_DATA_TABLES
) -> list[str]:
    """`VACUUM (ANALYZE)` each table on PostgreSQL; returns the tables vacuumed (none on SQLite).

    VACUUM cannot run inside a transaction block, so it runs on a connection
    in AUTOCOMMIT. It makes dead row versions (deleted rows, an erasure's
    overwritten ones) reusable space; it does not rewrite the files (VACUUM
    FULL would, under an exclusive lock), so old bytes may stay on disk until
    reused. SQLite reuses freed pages the same way and is not vacuumed here.
    """
    if database.dialect.name != "postgresql":
        return []
    preparer = database.dialect.identifier_preparer
    async with database.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in tables:
            await autocommit.exec_driver_sql(f"VACUUM (ANALYZE) {preparer.quote(table)}")
    return list(tables)
