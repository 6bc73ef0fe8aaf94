"""Housekeeping jobs that keep the tables the engine touches per event small."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import ProcessedUpdate
from storage.whatsapp_inbound import prune_processed


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
