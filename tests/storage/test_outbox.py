"""The outbox's way out: claiming due rows, recording outcomes, operators' views."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.vocabulary import Channel, DeliveryStatus, Language, OutboxStatus
from storage.db import create_engine
from storage.models import ChannelAccount, Conversation, Outbox
from storage.outbox import (
    ClaimedNotice,
    Notice,
    claim_due,
    counts_by_status,
    enqueue,
    hand_back,
    list_failed,
    mark_failed,
    mark_retry,
    mark_sent,
    requeue_failed,
)

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def notice(key: str, recipient: str = "5512345678", channel: Channel = Channel.TELEGRAM) -> Notice:
    return Notice(
        dedupe_key=key,
        channel=channel,
        recipient=recipient,
        kind="card_ready",
        body=f"Kartu siap ({key})",
        params={"kpj": "12345678901"},
    )


async def add(
    db: AsyncEngine, *notices: Notice, now: datetime = NOW, not_before: datetime | None = None
) -> None:
    async with db.begin() as connection:
        for item in notices:
            await enqueue(connection, item, now=now, not_before=not_before)


async def claim(
    db: AsyncEngine,
    *,
    now: datetime = NOW,
    limit: int = 10,
    channels: list[Channel] | None = None,
) -> list[ClaimedNotice]:
    async with db.begin() as connection:
        return await claim_due(connection, now=now, limit=limit, lease=LEASE, channels=channels)


async def row(db: AsyncEngine, key: str) -> Outbox:
    async with db.connect() as connection:
        result = await connection.execute(select(Outbox).where(Outbox.dedupe_key == key))
        return Outbox(**result.mappings().one())


async def test_claim_takes_due_rows_oldest_first_and_marks_them_sending(
    db_engine: AsyncEngine,
) -> None:
    await add(db_engine, notice("b"), not_before=NOW - timedelta(minutes=1))
    await add(db_engine, notice("a"), not_before=NOW - timedelta(minutes=2))
    await add(db_engine, notice("now"), not_before=NOW)
    await add(db_engine, notice("later"), not_before=NOW + timedelta(seconds=1))

    claimed = await claim(db_engine)

    assert [c.body for c in claimed] == ["Kartu siap (a)", "Kartu siap (b)", "Kartu siap (now)"]
    first = claimed[0]
    assert (first.channel, first.recipient, first.kind, first.params, first.attempts) == (
        Channel.TELEGRAM,
        "5512345678",
        "card_ready",
        {"kpj": "12345678901"},
        0,
    )
    assert first.claimed_until == NOW + LEASE
    stored = await row(db_engine, "a")
    assert (stored.status, stored.claimed_until) == (OutboxStatus.SENDING, NOW + LEASE)
    assert (await row(db_engine, "later")).status is OutboxStatus.PENDING
    assert await claim(db_engine) == []  # claimed rows are not handed out twice


async def test_claim_respects_the_limit_and_the_channels(db_engine: AsyncEngine) -> None:
    await add(db_engine, *(notice(f"t{n}") for n in range(5)))
    await add(db_engine, notice("w", recipient="6281234567890", channel=Channel.WHATSAPP))

    assert await claim(db_engine, limit=0) == []
    assert await claim(db_engine, channels=[]) == []
    assert len(await claim(db_engine, limit=2, channels=[Channel.TELEGRAM])) == 2
    rest = await claim(db_engine, channels=[Channel.TELEGRAM])
    assert [c.channel for c in rest] == [Channel.TELEGRAM] * 3
    [whatsapp] = await claim(db_engine)
    assert whatsapp.channel is Channel.WHATSAPP


async def test_a_crashed_dispatchers_rows_come_back_after_the_lease(db_engine: AsyncEngine) -> None:
    await add(db_engine, notice("x"))
    [first] = await claim(db_engine)

    assert await claim(db_engine, now=NOW + LEASE) == []  # the lease is still held
    [again] = await claim(db_engine, now=NOW + LEASE + timedelta(seconds=1))

    assert again.id == first.id
    assert again.claimed_until == NOW + 2 * LEASE + timedelta(seconds=1)


async def test_outcomes_are_fenced_by_the_claim(db_engine: AsyncEngine) -> None:
    await add(db_engine, notice("x"))
    [stale] = await claim(db_engine)
    [current] = await claim(db_engine, now=NOW + LEASE + timedelta(seconds=1))

    async with db_engine.begin() as connection:
        assert not await mark_sent(connection, stale, now=NOW)
        assert not await mark_failed(connection, stale, error="late")
        assert not await mark_retry(connection, stale, not_before=NOW, error="late")
    assert (await row(db_engine, "x")).status is OutboxStatus.SENDING

    async with db_engine.begin() as connection:
        assert await mark_sent(connection, current, now=NOW + timedelta(minutes=6))
    sent = await row(db_engine, "x")
    assert (sent.status, sent.sent_at, sent.attempts, sent.claimed_until) == (
        OutboxStatus.SENT,
        NOW + timedelta(minutes=6),
        1,
        None,
    )
    async with db_engine.begin() as connection:  # a finished row is no one's claim any more
        assert not await mark_failed(connection, current, error="twice")


async def test_retry_counts_an_attempt_unless_told_not_to(db_engine: AsyncEngine) -> None:
    await add(db_engine, notice("x"))
    [claimed] = await claim(db_engine)
    async with db_engine.begin() as connection:
        assert await mark_retry(
            connection, claimed, not_before=NOW + timedelta(seconds=30), error="TimeoutError"
        )
    retried = await row(db_engine, "x")
    assert (retried.status, retried.attempts, retried.last_error, retried.not_before) == (
        OutboxStatus.PENDING,
        1,
        "TimeoutError",
        NOW + timedelta(seconds=30),
    )

    assert await claim(db_engine, now=NOW + timedelta(seconds=29)) == []
    [again] = await claim(db_engine, now=NOW + timedelta(seconds=30))
    assert again.attempts == 1
    async with db_engine.begin() as connection:
        await mark_retry(
            connection,
            again,
            not_before=NOW + timedelta(minutes=1),
            error=None,
            count_attempt=False,
        )
    handed_back = await row(db_engine, "x")
    assert (handed_back.attempts, handed_back.last_error) == (1, "TimeoutError")


async def test_failed_rows_are_listed_counted_and_can_be_requeued(db_engine: AsyncEngine) -> None:
    await add(db_engine, notice("old"), now=NOW - timedelta(hours=1))
    await add(db_engine, notice("new"), notice("fine"), notice("waiting"))
    claimed = {c.body: c for c in await claim(db_engine, limit=3)}
    async with db_engine.begin() as connection:
        await mark_failed(
            connection, claimed["Kartu siap (old)"], error="Forbidden: bot was blocked by the user"
        )
        await mark_failed(
            connection, claimed["Kartu siap (new)"], error="Bad Request: chat not found"
        )
        await mark_sent(connection, claimed["Kartu siap (fine)"], now=NOW)

    async with db_engine.connect() as connection:
        failed = await list_failed(connection)
        counts = await counts_by_status(connection)
    assert [(f.kind, f.last_error, f.attempts) for f in failed] == [
        ("card_ready", "Bad Request: chat not found", 1),
        ("card_ready", "Forbidden: bot was blocked by the user", 1),
    ]
    assert failed[1].created_at == NOW - timedelta(hours=1)
    assert counts == {
        OutboxStatus.PENDING: 1,
        OutboxStatus.SENDING: 0,
        OutboxStatus.SENT: 1,
        OutboxStatus.FAILED: 2,
    }

    later = NOW + timedelta(hours=2)
    async with db_engine.begin() as connection:
        assert await requeue_failed(connection, failed[0].id, now=later)
        assert not await requeue_failed(connection, failed[0].id, now=later)  # pending now
        fine_id = claimed["Kartu siap (fine)"].id
        assert not await requeue_failed(connection, fine_id, now=later)  # sent rows stay sent
    requeued = await row(db_engine, "new")
    assert (requeued.status, requeued.attempts, requeued.not_before) == (
        OutboxStatus.PENDING,
        0,
        later,
    )


async def test_a_message_reported_failed_after_sending_is_listed_and_can_be_requeued(
    db_engine: AsyncEngine,
) -> None:
    await add(db_engine, notice("wa"))
    (claimed,) = await claim(db_engine, limit=1)
    async with db_engine.begin() as connection:
        await mark_sent(connection, claimed, now=NOW, provider_message_id="wamid.1")
        # What a WhatsApp "failed" status webhook leaves: sent, but not delivered.
        await connection.execute(
            update(Outbox)
            .where(Outbox.id == claimed.id)
            .values(delivery_status=DeliveryStatus.FAILED, last_error="131026: undeliverable")
        )
    async with db_engine.connect() as connection:
        (failed,) = await list_failed(connection)
    assert (failed.id, failed.last_error) == (claimed.id, "131026: undeliverable")
    async with db_engine.begin() as connection:
        assert await requeue_failed(connection, claimed.id, now=NOW)
    again = await row(db_engine, "wa")
    assert (again.status, again.delivery_status, again.attempts) == (OutboxStatus.PENDING, None, 0)


async def test_concurrent_claims_never_share_a_row(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """Several processes claim at once (PostgreSQL: SKIP LOCKED); SQLite serialises claims."""
    await add(db_engine, *(notice(f"n{n}", recipient=str(7000 + n)) for n in range(60)))
    sqlite = db_engine.dialect.name == "sqlite"
    engines = [db_engine] if sqlite else [create_engine(database_url) for _ in range(3)]
    try:
        batches = await asyncio.gather(
            *(claim(engines[n % len(engines)], limit=7) for n in range(12))
        )
    finally:
        if not sqlite:
            for engine in engines:
                await engine.dispose()
    ids = [c.id for batch in batches for c in batch]
    assert len(ids) == len(set(ids)) == 60


@pytest.mark.parametrize("status", [OutboxStatus.SENT, OutboxStatus.FAILED])
async def test_finished_rows_are_never_claimed(
    db_engine: AsyncEngine, status: OutboxStatus
) -> None:
    await add(db_engine, notice("x"))
    [claimed] = await claim(db_engine)
    async with db_engine.begin() as connection:
        if status is OutboxStatus.SENT:
            await mark_sent(connection, claimed, now=NOW)
        else:
            await mark_failed(connection, claimed, error="no")
    assert await claim(db_engine, now=NOW + timedelta(days=1)) == []


# --- what a channel with a service window needs (WhatsApp) -------------------------------


async def add_account(
    db: AsyncEngine,
    channel: Channel,
    external_id: str,
    language: Language,
    last_inbound: datetime | None,
) -> None:
    """A person on `channel`; with `last_inbound`, their conversation (last message then)."""
    async with db.begin() as connection:
        account_id = await connection.scalar(
            insert(ChannelAccount)
            .values(channel=channel, external_id=external_id, language=language, created_at=NOW)
            .returning(ChannelAccount.id)
        )
        if last_inbound is not None:
            await connection.execute(
                insert(Conversation).values(
                    channel_account_id=account_id,
                    data={},
                    history=[],
                    version=1,
                    updated_at=last_inbound,
                )
            )


async def test_a_claim_carries_the_recipients_language_last_message_and_template_only(
    db_engine: AsyncEngine,
) -> None:
    wrote, silent, stranger = "6281234567890", "6281111111111", "6289999999999"
    await add_account(
        db_engine, Channel.WHATSAPP, wrote, Language.ENGLISH, NOW - timedelta(hours=3)
    )
    await add_account(db_engine, Channel.WHATSAPP, silent, Language.INDONESIAN, None)
    # The same digits on another channel are another person.
    await add_account(db_engine, Channel.TELEGRAM, stranger, Language.ENGLISH, NOW)
    await add(
        db_engine,
        notice("wrote", recipient=wrote, channel=Channel.WHATSAPP),
        notice("silent", recipient=silent, channel=Channel.WHATSAPP),
        notice("stranger", recipient=stranger, channel=Channel.WHATSAPP),
        notice("telegram", recipient=stranger, channel=Channel.TELEGRAM),
    )
    async with db_engine.begin() as connection:
        await connection.execute(
            update(Outbox).where(Outbox.dedupe_key == "silent").values(template_only=True)
        )

    claimed = {c.body: c for c in await claim(db_engine)}

    seen = {
        body.removeprefix("Kartu siap (").rstrip(")"): (
            c.recipient_language,
            c.last_inbound_at,
            c.template_only,
        )
        for body, c in claimed.items()
    }
    assert seen == {
        "wrote": (Language.ENGLISH, NOW - timedelta(hours=3), False),
        "silent": (Language.INDONESIAN, None, True),
        "stranger": (None, None, False),
        "telegram": (Language.ENGLISH, NOW, False),
    }


async def test_sent_rows_keep_the_platforms_message_id_for_status_reports(
    db_engine: AsyncEngine,
) -> None:
    await add(db_engine, notice("w", recipient="6281234567890", channel=Channel.WHATSAPP))
    [claimed] = await claim(db_engine)
    async with db_engine.begin() as connection:
        assert await mark_sent(
            connection, claimed, now=NOW + timedelta(seconds=2), provider_message_id="wamid.HBgL1"
        )
    sent = await row(db_engine, "w")
    assert (sent.provider_message_id, sent.delivery_status, sent.delivery_status_at) == (
        "wamid.HBgL1",
        DeliveryStatus.SENT,
        NOW + timedelta(seconds=2),
    )


async def test_a_resent_row_gets_the_new_message_id(db_engine: AsyncEngine) -> None:
    """A failed row requeued (or re-sent as a template) is a new message: the old id goes."""
    await add(db_engine, notice("w", recipient="6281234567890", channel=Channel.WHATSAPP))
    [first] = await claim(db_engine)
    async with db_engine.begin() as connection:
        await mark_sent(connection, first, now=NOW, provider_message_id="wamid.old")
        await connection.execute(
            update(Outbox)
            .where(Outbox.id == first.id)
            .values(status=OutboxStatus.FAILED, delivery_status=DeliveryStatus.FAILED)
        )
        await requeue_failed(connection, first.id, now=NOW + timedelta(hours=1))
    [again] = await claim(db_engine, now=NOW + timedelta(hours=1))
    async with db_engine.begin() as connection:
        await mark_sent(
            connection, again, now=NOW + timedelta(hours=1), provider_message_id="wamid.new"
        )
    sent = await row(db_engine, "w")
    assert (sent.provider_message_id, sent.delivery_status) == ("wamid.new", DeliveryStatus.SENT)


async def test_rows_handed_back_together_wait_each_until_its_time(db_engine: AsyncEngine) -> None:
    await add(db_engine, notice("a"), notice("b"), notice("c"))
    claimed = {c.body: c for c in await claim(db_engine)}
    a, b, c = (claimed[f"Kartu siap ({key})"] for key in "abc")
    not_ours = dataclasses.replace(c, claimed_until=c.claimed_until - timedelta(seconds=1))

    async with db_engine.begin() as connection:
        await hand_back(
            connection,
            [
                (a, NOW + timedelta(seconds=6)),
                (b, NOW + timedelta(seconds=12)),
                (not_ours, NOW + timedelta(seconds=18)),
            ],
        )

    back = {key: await row(db_engine, key) for key in "abc"}
    assert [(r.status, r.not_before, r.attempts, r.claimed_until) for r in back.values()] == [
        (OutboxStatus.PENDING, NOW + timedelta(seconds=6), 0, None),
        (OutboxStatus.PENDING, NOW + timedelta(seconds=12), 0, None),
        (OutboxStatus.SENDING, NOW, 0, NOW + LEASE),  # fenced: the claim did not match
    ]
