"""Housekeeping: old update ids forgotten, personal data deleted after retention, vacuum."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel, OutboxStatus
from scheduler.housekeeping import (
    PERSONAL_DATA_TABLES,
    prune_processed_updates,
    vacuum_personal_tables,
)
from scheduler.runner import build_scheduler, housekeeping_run
from storage.models import FailedUpdate, Outbox, PendingReply, ProcessedUpdate, WhatsappInbound

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


async def test_prune_removes_only_ids_older_than_the_cutoff(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker() as session, session.begin():
        for update_id, age in (("old-1", 40), ("old-2", 31), ("recent", 29), ("today", 0)):
            session.add(
                ProcessedUpdate(
                    channel=Channel.TELEGRAM,
                    update_id=update_id,
                    processed_at=NOW - timedelta(days=age),
                )
            )
    removed = await prune_processed_updates(sessionmaker, older_than=NOW - timedelta(days=30))
    assert removed == 2
    async with sessionmaker() as session:
        left = (await session.execute(select(ProcessedUpdate.update_id))).scalars().all()
    assert sorted(left) == ["recent", "today"]


async def test_scheduler_registers_the_nightly_prune_without_starting(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    scheduler = build_scheduler(
        sessionmaker=sessionmaker,
        clock=lambda: NOW,
        processed_update_retention=timedelta(days=30),
        timezone="Asia/Jakarta",
    )
    (job,) = scheduler.get_jobs()
    assert job.id == "housekeeping"
    assert str(job.trigger) == "cron[hour='3', minute='0']"
    assert not scheduler.running


async def test_prune_also_forgets_old_processed_whatsapp_journal_rows(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker() as session, session.begin():
        for message_id, processed_age in (("old", 31), ("recent", 29), ("unprocessed", None)):
            session.add(
                WhatsappInbound(
                    message_id=f"wamid.{message_id}",
                    sender_id="6281234567890",
                    payload_ciphertext=b"x",
                    received_at=NOW - timedelta(days=40),
                    processed_at=None
                    if processed_age is None
                    else NOW - timedelta(days=processed_age),
                )
            )
    await prune_processed_updates(sessionmaker, older_than=NOW - timedelta(days=30))
    async with sessionmaker() as session:
        left = (await session.execute(select(WhatsappInbound.message_id))).scalars().all()
    # A message never handled stays, however old.
    assert sorted(left) == ["wamid.recent", "wamid.unprocessed"]


def notice(key: str, status: OutboxStatus, age_days: int, *, sent: bool = True) -> Outbox:
    when = NOW - timedelta(days=age_days)
    return Outbox(
        dedupe_key=key,
        channel=Channel.TELEGRAM,
        recipient="1001",
        kind="card_ready",
        body="Kartu Siti Aminah siap",
        params={},
        status=status,
        not_before=when,
        created_at=when - timedelta(days=1),
        sent_at=when if sent else None,
    )


async def test_retention_deletes_old_finished_rows_and_keeps_young_and_unsent_ones(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                notice("sent-old", OutboxStatus.SENT, 91),
                notice("sent-young", OutboxStatus.SENT, 89),
                # A failed row never sent counts from its creation (day 90 + 1).
                notice("failed-old", OutboxStatus.FAILED, 90, sent=False),
                notice("failed-young", OutboxStatus.FAILED, 80, sent=False),
                # Waiting or in flight: never deleted by age.
                notice("pending-old", OutboxStatus.PENDING, 200, sent=False),
                notice("sending-old", OutboxStatus.SENDING, 200, sent=False),
            ]
        )
        for update_id, age in (("parked-old", 95), ("parked-young", 10)):
            session.add(
                FailedUpdate(
                    channel=Channel.WHATSAPP,
                    update_id=update_id,
                    sender_id="6281234567890",
                    payload_ciphertext=b"x",
                    error_type="ValueError",
                    attempts=5,
                    failed_at=NOW - timedelta(days=age),
                )
            )
        for update_id, age in (("id-old", 31), ("id-young", 29)):
            session.add(
                ProcessedUpdate(
                    channel=Channel.WHATSAPP,
                    update_id=update_id,
                    processed_at=NOW - timedelta(days=age),
                )
            )
        # Replies of a channel switched off long ago (a running one drops them after a day).
        for update_id, age in (("reply-old", 91), ("reply-young", 1)):
            written = NOW - timedelta(days=age)
            session.add(
                PendingReply(
                    channel=Channel.WHATSAPP,
                    chat_id="6281234567890",
                    update_id=update_id,
                    payload_ciphertext=b"x",
                    created_at=written,
                    not_before=written,
                )
            )

    await housekeeping_run(
        sessionmaker,
        now=NOW,
        processed_update_retention=timedelta(days=30),
        retention=timedelta(days=90),
    )

    async with sessionmaker() as session:
        keys = (await session.execute(select(Outbox.dedupe_key))).scalars().all()
        parked = (await session.execute(select(FailedUpdate.update_id))).scalars().all()
        ids = (await session.execute(select(ProcessedUpdate.update_id))).scalars().all()
        replies = (await session.execute(select(PendingReply.update_id))).scalars().all()
    assert sorted(keys) == ["failed-young", "pending-old", "sending-old", "sent-young"]
    assert parked == ["parked-young"]
    assert ids == ["id-young"]
    assert replies == ["reply-young"]


async def test_a_retention_shorter_than_the_dedupe_window_prunes_ids_too(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker() as session, session.begin():
        session.add(
            ProcessedUpdate(
                channel=Channel.WHATSAPP, update_id="id", processed_at=NOW - timedelta(days=50)
            )
        )
    await housekeeping_run(
        sessionmaker,
        now=NOW,
        processed_update_retention=timedelta(days=60),
        retention=timedelta(days=45),
    )
    async with sessionmaker() as session:
        assert (await session.execute(select(ProcessedUpdate.id))).first() is None


async def test_the_tables_holding_personal_data_are_vacuumed_on_postgresql(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    database = sessionmaker.kw["bind"]
    await housekeeping_run(
        sessionmaker,
        now=NOW,
        processed_update_retention=timedelta(days=30),
        retention=timedelta(days=90),
    )
    vacuumed = await vacuum_personal_tables(database)
    if database.dialect.name != "postgresql":
        assert vacuumed == []  # SQLite: nothing to run, nothing fails
        return
    assert set(vacuumed) >= {"worker", "outbox", "channel_account", "failed_update"}
    async with database.connect() as connection:
        await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        rows = await connection.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables "
                "WHERE last_vacuum IS NOT NULL AND relname = ANY(:tables)"
            ),
            {"tables": list(PERSONAL_DATA_TABLES)},
        )
        assert sorted(row.relname for row in rows) == sorted(PERSONAL_DATA_TABLES)
