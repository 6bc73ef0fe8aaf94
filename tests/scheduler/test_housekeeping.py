"""Housekeeping: old inbound update ids are forgotten, recent ones keep deduplicating."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from scheduler.housekeeping import prune_processed_updates
from scheduler.runner import build_scheduler
from storage.models import ProcessedUpdate, WhatsappInbound

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
