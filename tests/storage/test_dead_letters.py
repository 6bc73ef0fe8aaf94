"""Parked updates: stored once, encrypted, listed without content."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from storage.crypto import NikCipher, decode_key, generate_key
from storage.dead_letters import DeadLetters
from storage.models import FailedUpdate

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
PAYLOAD = '{"update_id": 7, "message": {"text": "3201014708900001"}}'


async def test_park_stores_the_payload_encrypted_once_and_lists_it(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    store = DeadLetters(sessionmaker, NikCipher(decode_key(generate_key())))
    for attempts in (5, 6):  # a second park of the same update changes nothing
        await store.park(
            channel=Channel.TELEGRAM,
            update_id="7",
            sender_id="42",
            payload=PAYLOAD,
            error_type="OperationalError",
            attempts=attempts,
            now=NOW,
        )
    await store.park(
        channel=Channel.TELEGRAM,
        update_id="8",
        sender_id=None,
        payload="{}",
        error_type="KeyError",
        attempts=5,
        now=NOW + timedelta(minutes=1),
    )
    async with sessionmaker() as session:
        rows = (await session.execute(select(FailedUpdate))).scalars().all()
    assert len(rows) == 2
    assert all(b"3201014708900001" not in row.payload_ciphertext for row in rows)
    listed = await store.list()
    assert [(p.update_id, p.attempts) for p in listed] == [("8", 5), ("7", 5)]  # newest first
    assert await store.payload(listed[1].id) == PAYLOAD
    assert await store.payload(-1) is None
