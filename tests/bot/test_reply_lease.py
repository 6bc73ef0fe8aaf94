"""A reply that waits longer than its lease is not taken over and sent twice (issue 14).

Found by the province proof (tests/deploy/test_province_cluster.py) under load: a
reply's lease was set when the step queued it and only renewed after a refused
send, so a reply waiting behind the person's earlier ones, or in a slow send,
could be claimed by another process's sweep and sent a second time. The
holder now renews the leases of every row it holds every third of the lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.delivery import DeliverySettings, ReplyDelivery
from domain.vocabulary import Channel, Language
from handlers.types import Reply
from scheduler.sending import SendResult, Sent
from storage.crypto import NikCipher
from storage.models import PendingReply
from tests.fakes.chat import TEST_KEY
from tests.fakes.clock import FrozenClock

CIPHER = NikCipher(TEST_KEY)
LEASE = timedelta(seconds=1.5)


class SlowSink:
    """A platform whose sends hang until `opened` (a slow send, or one held by a 429)."""

    channel = Channel.TELEGRAM
    channel_wide_rate_limit = False

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.sending = asyncio.Event()
        self.sent: list[tuple[str, str]] = []

    def render(self, replies: Sequence[Reply], language: Language) -> list[str]:
        return [reply.text for reply in replies]

    async def send(self, chat_id: str, part: Any) -> SendResult:
        self.sending.set()
        await self.opened.wait()
        self.sent.append((chat_id, part))
        return Sent()


async def _lease_until(db_engine: AsyncEngine) -> Any:
    async with db_engine.connect() as connection:
        return await connection.scalar(select(PendingReply.lease_until))


async def test_a_reply_held_past_its_lease_is_not_taken_over_by_another_process(
    db_engine: AsyncEngine,
) -> None:
    clock = FrozenClock()
    settings = DeliverySettings(lease=LEASE)
    slow, other_sink = SlowSink(), SlowSink()
    other_sink.opened.set()
    holder = ReplyDelivery(slow, database=db_engine, cipher=CIPHER, clock=clock, settings=settings)
    other = ReplyDelivery(
        other_sink, database=db_engine, cipher=CIPHER, clock=clock, settings=settings
    )
    try:
        await holder.send_now("42", [Reply("Ketik NIK Siti Aminah")], Language.INDONESIAN, "u1")
        await asyncio.wait_for(slow.sending.wait(), 10)
        # The send hangs far past the lease it was queued with.
        clock.advance(timedelta(seconds=10))
        # The holder's renewal (every third of the lease, real time) catches up with
        # the clock: the row is held again from "now".
        for _ in range(200):
            lease_until = await _lease_until(db_engine)
            if lease_until is not None and lease_until > clock():
                break
            await asyncio.sleep(0.05)
        assert lease_until is not None and lease_until > clock()
        assert await other.sweep_once() == 0  # not taken over while its holder lives
        slow.opened.set()
        await asyncio.wait_for(holder.drain(), 10)
        assert slow.sent == [("42", "Ketik NIK Siti Aminah")]
        assert await other.sweep_once() == 0
        await other.drain()
        assert other_sink.sent == []
        assert await _lease_until(db_engine) is None  # the row is gone (delivered)
    finally:
        slow.opened.set()
        await holder.close()
        await other.close()


async def test_a_dead_holders_reply_is_still_taken_over_after_its_lease(
    db_engine: AsyncEngine,
) -> None:
    """Renewal stops with the process: its rows come back one lease later, as before."""
    clock = FrozenClock()
    settings = DeliverySettings(lease=LEASE)
    dead, sink = SlowSink(), SlowSink()
    sink.opened.set()
    holder = ReplyDelivery(dead, database=db_engine, cipher=CIPHER, clock=clock, settings=settings)
    await holder.send_now("42", [Reply("Ketik NIK Siti Aminah")], Language.INDONESIAN, "u1")
    await asyncio.wait_for(dead.sending.wait(), 10)
    # The process "dies": its tasks stop without handing anything back or renewing.
    assert holder._renewer is not None
    for task in [holder._renewer, *holder._tasks.values()]:
        task.cancel()
    await asyncio.gather(holder._renewer, *holder._tasks.values(), return_exceptions=True)
    other = ReplyDelivery(sink, database=db_engine, cipher=CIPHER, clock=clock, settings=settings)
    try:
        assert await other.sweep_once() == 0  # its lease still runs
        clock.advance(LEASE + timedelta(seconds=1))
        assert await other.sweep_once() == 1
        await asyncio.wait_for(other.drain(), 10)
        assert sink.sent == [("42", "Ketik NIK Siti Aminah")]
    finally:
        await other.close()


async def test_the_reply_queue_keeps_working_while_the_engine_pool_is_exhausted(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """The province proof at load 10: every engine connection of a process was busy past
    the pool's timeout, lease renewals and deletes timed out behind them, the leases ran
    out and other processes sent the replies again. The reply queue's statements have
    connections of their own (PostgreSQL; SQLite has one connection per process)."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("a pool of its own needs PostgreSQL")
    crowded = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    sink = SlowSink()
    sink.opened.set()
    replies = ReplyDelivery(
        sink,
        database=crowded,
        cipher=CIPHER,
        clock=FrozenClock(),
        settings=DeliverySettings(flush_delay_s=0.01),
    )
    busy = await crowded.connect()  # the engine's steps hold every connection
    try:
        await replies.send_now("42", [Reply("Tersimpan.")], Language.INDONESIAN, "u1")
        await asyncio.wait_for(replies.drain(), 10)
        assert await replies.renew_once() == 0  # nothing held: delivered and deleted
        async with db_engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(PendingReply)) == 0
    finally:
        await busy.close()
        await replies.close()
        await crowded.dispose()
    assert sink.sent == [("42", "Tersimpan.")]
