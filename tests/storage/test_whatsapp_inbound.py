"""The WhatsApp journal (record, claim, outcomes, pruning) and delivery statuses on the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.vocabulary import Channel, DeliveryStatus, OutboxStatus
from storage.crypto import NikCipher
from storage.db import create_engine
from storage.models import Outbox, WhatsappInbound
from storage.outbox import Notice, enqueue
from storage.whatsapp_inbound import (
    ClaimedMessage,
    InboundMessage,
    apply_status,
    claim,
    hold_ends,
    mark_failed,
    mark_processed,
    pending_count,
    prune_processed,
    record,
    release,
)
from tests.fakes.chat import TEST_KEY

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)
CIPHER = NikCipher(TEST_KEY)
_ids = itertools.count(1)


def message(
    sender: str = "6281234567890", text: str = "halo", wamid: str | None = None
) -> InboundMessage:
    wamid = wamid or f"wamid.test{next(_ids):06d}"
    return InboundMessage(wamid, sender, f'{{"message":{{"id":"{wamid}","text":"{text}"}}}}')


async def add(db: AsyncEngine, *messages: InboundMessage, now: datetime = NOW) -> list[str]:
    async with db.begin() as connection:
        return await record(connection, messages, cipher=CIPHER, now=now)


async def take(db: AsyncEngine, *, now: datetime = NOW, limit: int = 50) -> list[ClaimedMessage]:
    async with db.begin() as connection:
        return await claim(connection, now=now, lease=LEASE, limit=limit)


async def done(db: AsyncEngine, *claimed: ClaimedMessage, now: datetime = NOW) -> None:
    async with db.begin() as connection:
        for item in claimed:
            assert await mark_processed(connection, item, now=now)


# --- record -------------------------------------------------------------------------


async def test_record_stores_new_messages_once_and_encrypted(db_engine: AsyncEngine) -> None:
    first, second = message(text="NIK 3201014708900001"), message()
    assert await add(db_engine, first, second) == [first.message_id, second.message_id]
    assert await add(db_engine, second, first, message(wamid=first.message_id)) == []
    async with db_engine.connect() as connection:
        rows = (await connection.execute(select(WhatsappInbound))).all()
    assert len(rows) == 2
    assert all(b"3201014708900001" not in row.payload_ciphertext for row in rows)
    stored = {row.message_id: CIPHER.decrypt_payload(row.payload_ciphertext) for row in rows}
    assert stored[first.message_id] == first.payload


async def test_a_batch_with_one_known_message_records_only_the_new_one(
    db_engine: AsyncEngine,
) -> None:
    known = message()
    await add(db_engine, known)
    fresh = message()
    assert await add(db_engine, fresh, known) == [fresh.message_id]


async def test_the_same_message_recorded_concurrently_is_one_row(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """Meta delivering one message twice at once: both transactions commit, one row."""
    twin = message()
    sqlite = db_engine.dialect.name == "sqlite"
    engines = [db_engine] if sqlite else [create_engine(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(add(engines[n % len(engines)], twin) for n in range(8)))
    finally:
        if not sqlite:
            for engine in engines:
                await engine.dispose()
    assert sorted(results) == [[]] * 7 + [[twin.message_id]]
    async with db_engine.connect() as connection:
        assert await pending_count(connection) == 1


async def test_a_sender_id_too_long_for_the_column_is_refused(db_engine: AsyncEngine) -> None:
    # A business-scoped user id (country code, dot, up to 128 characters) fits.
    await add(db_engine, message(sender="ID." + "9" * 128))
    with pytest.raises(ValueError):
        await add(db_engine, message(sender="ID." + "9" * 160))


# --- claim and outcomes ---------------------------------------------------------------


async def test_claim_hands_out_each_senders_messages_in_arrival_order(
    db_engine: AsyncEngine,
) -> None:
    a1, b1, a2, b2 = message("a"), message("b"), message("a"), message("b")
    await add(db_engine, a1, b1)
    await add(db_engine, a2, b2)
    claimed = await take(db_engine)
    assert [c.message_id for c in claimed] == [m.message_id for m in (a1, b1, a2, b2)]
    assert all(c.claimed_until == NOW + LEASE for c in claimed)
    assert CIPHER.decrypt_payload(claimed[0].payload_ciphertext) == a1.payload
    assert await take(db_engine) == []  # all held


async def test_a_senders_messages_are_claimed_in_the_order_sent_not_delivered(
    db_engine: AsyncEngine,
) -> None:
    """Meta delivered the later message first, in its own request: the earlier one goes first."""
    sent = NOW - timedelta(seconds=5)
    later = dataclasses.replace(message(text="Ciawi"), sent_at=sent + timedelta(seconds=1))
    earlier = dataclasses.replace(message(text="Sukamaju"), sent_at=sent)
    other = dataclasses.replace(message("6285298765432"), sent_at=sent - timedelta(seconds=9))
    await add(db_engine, later, other)
    await add(db_engine, earlier)
    claimed = await take(db_engine)
    assert [c.message_id for c in claimed] == [
        other.message_id,
        earlier.message_id,
        later.message_id,
    ]
    assert [c.sent_at for c in claimed][1:] == [sent, sent + timedelta(seconds=1)]


async def test_a_message_sent_before_one_already_processed_is_claimed_late(
    db_engine: AsyncEngine,
) -> None:
    """It came after the hold: the engine must not take it as an answer to a later question."""
    sent = NOW - timedelta(seconds=30)
    newer = dataclasses.replace(message(), sent_at=sent + timedelta(seconds=2))
    await add(db_engine, newer)
    await done(db_engine, *await take(db_engine))
    older = dataclasses.replace(message(), sent_at=sent)
    same_second = dataclasses.replace(message(), sent_at=sent + timedelta(seconds=2))
    untimed = message()
    someone_else = dataclasses.replace(message("6285298765432"), sent_at=sent)
    await add(db_engine, older, same_second, untimed, someone_else)
    late = {c.message_id: c.late for c in await take(db_engine)}
    assert late == {
        older.message_id: True,
        same_second.message_id: False,  # whole seconds: no order within one
        untimed.message_id: False,
        someone_else.message_id: False,
    }


async def test_a_sender_is_held_until_their_newest_message_is_hold_old(
    db_engine: AsyncEngine,
) -> None:
    hold = timedelta(seconds=1)
    first, second = message(), message()
    quiet = message("6285298765432")
    await add(db_engine, quiet, now=NOW - timedelta(seconds=3))
    await add(db_engine, first, now=NOW - timedelta(seconds=2))
    await add(db_engine, second, now=NOW - timedelta(milliseconds=400))  # still arriving

    async def held_claim(now: datetime) -> list[str]:
        async with db_engine.begin() as connection:
            claimed = await claim(connection, now=now, lease=LEASE, limit=50, hold=hold)
        return [c.message_id for c in claimed]

    async with db_engine.connect() as connection:
        ends = await hold_ends(connection, now=NOW, hold=hold)
        assert await hold_ends(connection, now=NOW + hold, hold=hold) is None
        assert await hold_ends(connection, now=NOW, hold=timedelta(0)) is None
    assert ends == NOW + timedelta(milliseconds=600)
    assert await held_claim(NOW) == [quiet.message_id]  # the other sender is not held
    assert await held_claim(ends - timedelta(milliseconds=1)) == []
    assert await held_claim(ends) == [first.message_id, second.message_id]


async def test_a_sender_with_a_held_message_is_skipped_until_it_is_done(
    db_engine: AsyncEngine,
) -> None:
    first = message("a")
    await add(db_engine, first)
    [held] = await take(db_engine)
    later, other = message("a"), message("b")
    await add(db_engine, later, other)
    assert [c.message_id for c in await take(db_engine)] == [other.message_id]
    await done(db_engine, held)
    assert [c.message_id for c in await take(db_engine)] == [later.message_id]


async def test_a_limit_cutting_a_sender_leaves_the_rest_for_after_the_claim(
    db_engine: AsyncEngine,
) -> None:
    rows = [message("a") for _ in range(3)]
    await add(db_engine, *rows)
    first = await take(db_engine, limit=2)
    assert [c.message_id for c in first] == [m.message_id for m in rows[:2]]
    assert await take(db_engine) == []  # the third waits: its earlier rows are held
    await done(db_engine, *first)
    assert [c.message_id for c in await take(db_engine)] == [rows[2].message_id]


async def test_a_crashed_processors_messages_are_claimed_again_after_the_lease(
    db_engine: AsyncEngine,
) -> None:
    await add(db_engine, message("a"), message("a"))
    stale = await take(db_engine)
    assert await take(db_engine, now=NOW + LEASE - timedelta(seconds=1)) == []
    again = await take(db_engine, now=NOW + LEASE + timedelta(seconds=1))
    assert [c.id for c in again] == [c.id for c in stale]
    async with db_engine.begin() as connection:  # the old claim is fenced out
        assert not await mark_processed(connection, stale[0], now=NOW)
        assert not await mark_failed(connection, stale[0], error="X", retry_at=NOW)
        assert await mark_processed(connection, again[0], now=NOW)


async def test_a_failed_message_holds_its_sender_until_the_retry_and_counts_attempts(
    db_engine: AsyncEngine,
) -> None:
    first, second, other = message("a"), message("a"), message("b")
    await add(db_engine, first, second, other)
    claimed = await take(db_engine)
    retry_at = NOW + timedelta(seconds=30)
    async with db_engine.begin() as connection:
        assert await mark_failed(
            connection, claimed[0], error="OperationalError", retry_at=retry_at
        )
        assert await release(connection, [claimed[1]]) == 1
        assert await mark_processed(connection, claimed[2], now=NOW)
    assert await take(db_engine, now=NOW + timedelta(seconds=29)) == []
    retried = await take(db_engine, now=retry_at + timedelta(seconds=1))
    assert [(c.message_id, c.attempts) for c in retried] == [
        (first.message_id, 1),
        (second.message_id, 0),
    ]
    async with db_engine.connect() as connection:
        error = await connection.scalar(
            select(WhatsappInbound.last_error).where(WhatsappInbound.message_id == first.message_id)
        )
    assert error == "OperationalError"


async def test_a_parked_message_is_done_with_its_error_and_the_sender_goes_on(
    db_engine: AsyncEngine,
) -> None:
    first, second = message("a"), message("a")
    await add(db_engine, first, second)
    [parked, _] = await take(db_engine)
    async with db_engine.begin() as connection:
        await mark_processed(connection, parked, now=NOW, error="ValueError")
        await release(connection, [_])
    assert [c.message_id for c in await take(db_engine)] == [second.message_id]
    async with db_engine.connect() as connection:
        row = (
            await connection.execute(
                select(WhatsappInbound).where(WhatsappInbound.message_id == first.message_id)
            )
        ).one()
    assert (row.attempts, row.last_error, row.processed_at) == (1, "ValueError", NOW)


async def test_concurrent_claims_never_split_a_sender(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """Several processes claim at once (PostgreSQL): a sender's rows go to one claim, in order."""
    senders = [f"62812000000{n:02d}" for n in range(12)]
    for _ in range(5):
        await add(db_engine, *(message(sender) for sender in senders))
    sqlite = db_engine.dialect.name == "sqlite"
    engines = [db_engine] if sqlite else [create_engine(database_url) for _ in range(4)]
    try:
        batches = await asyncio.gather(
            *(take(engines[n % len(engines)], limit=7) for n in range(16))
        )
    finally:
        if not sqlite:
            for engine in engines:
                await engine.dispose()
    owner: dict[str, int] = {}
    claimed_ids = []
    for number, batch in enumerate(batches):
        for item in batch:
            assert owner.setdefault(item.sender_id, number) == number
            claimed_ids.append(item.id)
    assert len(claimed_ids) == len(set(claimed_ids))
    async with db_engine.connect() as connection:
        rows = (
            await connection.execute(select(WhatsappInbound).order_by(WhatsappInbound.id))
        ).all()
    for sender in owner:  # the claimed rows of a sender are the first of their rows
        theirs = [row.id for row in rows if row.sender_id == sender]
        mine = sorted(i for batch in batches for i in (c.id for c in batch) if i in theirs)
        assert mine == theirs[: len(mine)]


async def test_prune_deletes_only_processed_rows_older_than_the_cutoff(
    db_engine: AsyncEngine,
) -> None:
    old, recent, open_ = message("a"), message("b"), message("c")
    await add(db_engine, old, recent, open_)
    claimed = {c.message_id: c for c in await take(db_engine)}
    await done(db_engine, claimed[old.message_id], now=NOW - timedelta(days=40))
    await done(db_engine, claimed[recent.message_id], now=NOW - timedelta(days=2))
    async with db_engine.begin() as connection:
        assert await prune_processed(connection, before=NOW - timedelta(days=30)) == 1
    async with db_engine.connect() as connection:
        left = set((await connection.execute(select(WhatsappInbound.message_id))).scalars())
    assert left == {recent.message_id, open_.message_id}


# --- delivery statuses --------------------------------------------------------------


async def sent_notice(
    db: AsyncEngine, wamid: str, *, template_only: bool = False, key: str | None = None
) -> int:
    """An outbox row the sender delivered as `wamid`."""
    async with db.begin() as connection:
        await enqueue(
            connection,
            Notice(
                dedupe_key=key or f"card_ready:{wamid}",
                channel=Channel.WHATSAPP,
                recipient="6281234567890",
                kind="card_ready",
                body="Kartu siap",
                template="card_ready",
            ),
            now=NOW,
        )
        await connection.execute(
            update(Outbox)
            .where(Outbox.dedupe_key == (key or f"card_ready:{wamid}"))
            .values(
                status=OutboxStatus.SENT,
                sent_at=NOW,
                attempts=1,
                provider_message_id=wamid,
                template_only=template_only,
            )
        )
        return int(
            await connection.scalar(select(Outbox.id).where(Outbox.provider_message_id == wamid))
        )


async def status_of(db: AsyncEngine, outbox_id: int) -> Outbox:
    async with db.connect() as connection:
        row = (await connection.execute(select(Outbox).where(Outbox.id == outbox_id))).one()
    return row  # type: ignore[return-value]


async def report(
    db: AsyncEngine,
    wamid: str,
    status: DeliveryStatus,
    *,
    at: datetime = NOW,
    error_code: int | None = None,
) -> str:
    async with db.begin() as connection:
        return await apply_status(
            connection, wamid, status, at, error_code, now=NOW, error_title="Some error"
        )


SENT, DELIVERED, READ, FAILED = (
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.READ,
    DeliveryStatus.FAILED,
)
ORDERS = [
    *itertools.permutations([SENT, DELIVERED, READ]),
    (READ, FAILED, SENT),
    (FAILED, DELIVERED, READ),
    (SENT, FAILED, DELIVERED),
    (FAILED, SENT),
]


@pytest.mark.parametrize(
    "order",
    ORDERS,
    ids=lambda order: ">".join(s.value for s in order),
)
async def test_statuses_in_any_order_end_at_the_furthest_and_never_move_back(
    db_engine: AsyncEngine, order: tuple[DeliveryStatus, ...]
) -> None:
    outbox_id = await sent_notice(db_engine, "wamid.out1")
    best: DeliveryStatus | None = None
    for step, status in enumerate(order):
        outcome = await report(db_engine, "wamid.out1", status, at=NOW + timedelta(seconds=step))
        if best is None or status.rank > best.rank:
            assert outcome == "updated"
            best = status
        else:
            assert outcome == "stale"
        row = await status_of(db_engine, outbox_id)
        assert row.delivery_status is best
    assert row.status is OutboxStatus.SENT


async def test_the_same_status_twice_is_stale(db_engine: AsyncEngine) -> None:
    await sent_notice(db_engine, "wamid.out2")
    assert await report(db_engine, "wamid.out2", DeliveryStatus.DELIVERED) == "updated"
    assert await report(db_engine, "wamid.out2", DeliveryStatus.DELIVERED) == "stale"


async def test_a_status_for_an_unknown_message_changes_nothing(db_engine: AsyncEngine) -> None:
    outbox_id = await sent_notice(db_engine, "wamid.known")
    assert await report(db_engine, "wamid.someone-else", DeliveryStatus.READ) == "unknown"
    assert (await status_of(db_engine, outbox_id)).delivery_status is None


async def test_a_failed_status_keeps_its_reason(db_engine: AsyncEngine) -> None:
    outbox_id = await sent_notice(db_engine, "wamid.out3")
    assert await report(db_engine, "wamid.out3", DeliveryStatus.FAILED, error_code=131026) == (
        "updated"
    )
    row = await status_of(db_engine, outbox_id)
    assert (row.delivery_status, row.last_error, row.status, row.template_only) == (
        DeliveryStatus.FAILED,
        "131026: Some error",
        OutboxStatus.SENT,
        False,
    )


async def test_reengagement_failure_resends_the_row_as_its_template(db_engine: AsyncEngine) -> None:
    outbox_id = await sent_notice(db_engine, "wamid.out4")
    assert await report(db_engine, "wamid.out4", DeliveryStatus.FAILED, error_code=131047) == (
        "updated"
    )
    row = await status_of(db_engine, outbox_id)
    assert (row.status, row.template_only, row.not_before, row.claimed_until) == (
        OutboxStatus.PENDING,
        True,
        NOW,
        None,
    )
    # The template's own statuses start afresh; the old message id is forgotten.
    assert (row.provider_message_id, row.delivery_status) == (None, None)
    assert row.last_error is not None and row.last_error.startswith("131047")
    assert await report(db_engine, "wamid.out4", DeliveryStatus.FAILED, error_code=131047) == (
        "unknown"
    )


async def test_reengagement_failure_of_a_template_is_not_resent_again(
    db_engine: AsyncEngine,
) -> None:
    outbox_id = await sent_notice(db_engine, "wamid.out5", template_only=True)
    assert await report(db_engine, "wamid.out5", DeliveryStatus.FAILED, error_code=131047) == (
        "updated"
    )
    row = await status_of(db_engine, outbox_id)
    assert (row.status, row.delivery_status) == (OutboxStatus.SENT, DeliveryStatus.FAILED)


async def test_reengagement_failure_after_delivery_is_stale(db_engine: AsyncEngine) -> None:
    outbox_id = await sent_notice(db_engine, "wamid.out6")
    await report(db_engine, "wamid.out6", DeliveryStatus.DELIVERED)
    assert await report(db_engine, "wamid.out6", DeliveryStatus.FAILED, error_code=131047) == (
        "stale"
    )
    assert (await status_of(db_engine, outbox_id)).status is OutboxStatus.SENT


async def test_racing_statuses_of_one_message_never_move_it_back(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """delivered, read and sent arrive at once from several requests (PostgreSQL: row locks)."""
    outbox_id = await sent_notice(db_engine, "wamid.race")
    sqlite = db_engine.dialect.name == "sqlite"
    engines = [db_engine] if sqlite else [create_engine(database_url) for _ in range(3)]
    statuses = [DeliveryStatus.SENT, DeliveryStatus.READ, DeliveryStatus.DELIVERED] * 4
    try:
        await asyncio.gather(
            *(
                report(engines[n % len(engines)], "wamid.race", status)
                for n, status in enumerate(statuses)
            )
        )
    finally:
        if not sqlite:
            for engine in engines:
                await engine.dispose()
    assert (await status_of(db_engine, outbox_id)).delivery_status is DeliveryStatus.READ
