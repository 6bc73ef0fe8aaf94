"""`coverage_area`, `coverage_group` and `asn.open_sponsorships` (migration 0015, kept
by triggers) equal a fresh count after every kind of write: enrollment, every
transition (one and in bulk), the planner's lapse, erasure, a change of address, a
resubmission that changes the worker, statements that move two rows of one worker at
once, deletes; and after random sequences.

The expected figures are computed here in Python from the raw rows (the distinct
(worker, status) pairs per place), independent of the SQL under test; the page's
read (`areas_counted`) is also compared with the join it replaces (`areas_afresh`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from domain.vocabulary import (
    Occupation,
    PaymentPlan,
    SponsorshipStatus,
    WorkerConsent,
)
from storage import dues_queries, worker_side
from storage import sponsorship_state as state
from storage.audit import Actor
from storage.coverage import areas_afresh, areas_counted
from storage.crypto import NikCipher
from storage.db import create_engine
from storage.migrate import downgrade_to, upgrade_to_head
from storage.models import NO_PAID_MONTH, Asn, CoverageArea, CoverageGroup, Sponsorship, Worker
from storage.repositories import SponsorshipRepository, WorkerRepository
from tests.fakes.chat import TEST_KEY
from tests.storage.test_coverage_dashboard import add_sponsorship, add_worker, asn_in
from tests.storage.test_roles import add_opd

S = SponsorshipStatus
E = state.Event
NOW = datetime(2027, 1, 6, 3, 0, tzinfo=UTC)
PLACES: tuple[tuple[str, str, str | None], ...] = (
    ("Sukamaju", "Ciawi", "Bogor"),
    ("Cibodas", "Ciawi", None),
    ("Talang", "Selebar", "Kota Bengkulu"),
    ("Pagar Dewa", "Selebar", "Kota Bengkulu"),
)
_phones = itertools.count(1)

Key = tuple[bool, str, str, str, str]


async def expected_counts(connection: AsyncConnection) -> Counter[Key]:
    """Workers per (place, status) from the raw rows, counted in Python."""
    workers = {
        row.id: row
        for row in await connection.execute(
            select(Worker.id, Worker.erased_at, Worker.regency, Worker.district, Worker.village)
        )
    }
    pairs = {
        (worker_id, str(status))
        for worker_id, status in await connection.execute(
            select(Sponsorship.worker_id, Sponsorship.status)
        )
    }
    counts: Counter[Key] = Counter()
    for worker_id, status in pairs:
        worker = workers[worker_id]
        if worker.erased_at is not None:
            counts[(True, "", "", "", status)] += 1
        else:
            counts[(False, worker.regency or "", worker.district, worker.village, status)] += 1
    return counts


async def stored_counts(connection: AsyncConnection) -> Counter[Key]:
    counts: Counter[Key] = Counter()
    for erased, regency, district, village, status, workers in await connection.execute(
        select(
            CoverageArea.erased,
            CoverageArea.regency,
            CoverageArea.district,
            CoverageArea.village,
            CoverageArea.status,
            CoverageArea.workers,
        )
    ):
        assert workers >= 0, (erased, regency, district, village, status, workers)
        if workers:
            counts[(bool(erased), regency, district, village, str(status))] = workers
    return counts


async def open_per_asn(connection: AsyncConnection) -> tuple[dict[int, int], dict[int, int]]:
    """(stored `asn.open_sponsorships`, open sponsorships counted in Python) per ASN."""
    rows = await connection.execute(select(Asn.id, Asn.open_sponsorships))
    stored = {asn_id: count for asn_id, count in rows}
    counted = dict.fromkeys(stored, 0)
    for asn_id, status in await connection.execute(select(Sponsorship.asn_id, Sponsorship.status)):
        counted[asn_id] += SponsorshipStatus(status).is_open
    return stored, counted


GroupKey = tuple[str, int, date, date | None, bool]


async def groups(connection: AsyncConnection) -> tuple[Counter[GroupKey], Counter[GroupKey]]:
    """(stored `coverage_group`, sponsorships counted in Python) per group key."""
    stored: Counter[GroupKey] = Counter()
    group = CoverageGroup
    for status, opd, first, until, gap, count in await connection.execute(
        select(
            group.status,
            group.opd_id,
            group.first_month,
            group.paid_until,
            group.paid_after_gap,
            group.sponsorships,
        )
    ):
        assert count >= 0
        if count:
            key = (str(status), opd, first, None if until == NO_PAID_MONTH else until, bool(gap))
            stored[key] = count
    counted: Counter[GroupKey] = Counter(
        (str(status), opd, first, until, bool(gap))
        for status, opd, first, until, gap in await connection.execute(
            select(
                Sponsorship.status,
                Sponsorship.opd_id,
                Sponsorship.first_month,
                Sponsorship.paid_until,
                Sponsorship.paid_after_gap,
            )
        )
    )
    return stored, counted


async def assert_in_step(connection: AsyncConnection, after: str) -> None:
    assert await stored_counts(connection) == await expected_counts(connection), after
    stored_groups, counted_groups = await groups(connection)
    assert stored_groups == counted_groups, after
    stored, counted = await open_per_asn(connection)
    assert stored == counted, after
    assert await areas_counted(connection) == await areas_afresh(connection, opd_id=None), after


@pytest.fixture
async def connection(db_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with db_engine.begin() as connection:
        yield connection


@dataclass
class World:
    """Two OPDs with an ASN each, and workers in `PLACES` (each with a phone)."""

    connection: AsyncConnection
    session: AsyncSession
    opds: list[int]
    asns: list[tuple[int, int]]  # (asn id, its OPD id)
    workers: list[int]
    phones: dict[int, str]

    async def enroll(self, worker_id: int, *, asn: int = 0) -> int:
        asn_id, opd_id = self.asns[asn % len(self.asns)]
        return await SponsorshipRepository(self.session).add(
            worker_id=worker_id,
            asn_id=asn_id,
            opd_id=opd_id,
            occupation=Occupation.DRIVER,
            plan=PaymentPlan.MONTHLY,
            first_month=date(2027, 1, 1),
            worker_consent=WorkerConsent.GIVEN,
            birth_date_differs_from_nik=False,
            now=NOW,
        )

    async def move(self, event: state.Event, sponsorship_id: int, **values: object) -> bool:
        outcome = await state.transition(
            self.connection, event, sponsorship_id, now=NOW, values=values or None
        )
        return outcome.done

    async def erase(self, worker_id: int) -> None:
        erasure = await worker_side.erase_worker(
            self.session,
            phone_e164=self.phones[worker_id],
            worker_id=worker_id,
            actor=Actor.admin("operator"),
            now=NOW,
        )
        assert erasure is not None
        await self.session.flush()

    async def readdress(self, worker_id: int, place: tuple[str, str, str | None]) -> None:
        """The worker's data refreshed by a new enrollment (`WorkerRepository.upsert`)."""
        worker = await self.session.get(Worker, worker_id)
        assert worker is not None
        village, district, regency = place
        await WorkerRepository(self.session, NikCipher(TEST_KEY)).upsert(
            worker.id,
            nik="1771010101900001",
            nik_masked=worker.nik_masked,
            full_name=worker.full_name,
            birth_date=worker.birth_date,
            sex=worker.sex,
            phone_e164=worker.phone_e164,
            village=village,
            district=district,
            regency=regency,
            now=NOW,
        )
        self.session.expire(worker)

    async def open_of(self, worker_id: int) -> int | None:
        return (
            await self.connection.execute(
                select(Sponsorship.id).where(
                    Sponsorship.worker_id == worker_id,
                    Sponsorship.status.not_in([S.LAPSED, S.ENDED]),
                )
            )
        ).scalar()

    async def erased(self, worker_id: int) -> bool:
        stamp = await self.connection.scalar(select(Worker.erased_at).where(Worker.id == worker_id))
        return stamp is not None


async def build_world(connection: AsyncConnection, *, workers: int) -> World:
    opds = [await add_opd(connection, "DINKES", "Dinas"), await add_opd(connection, "BPKD", "Bd")]
    asns = [(await asn_in(connection, opd), opd) for opd in (*opds, opds[0])]
    ids, phones = [], {}
    for number in range(workers):
        phone = f"+62812{next(_phones):08d}"
        worker_id = await add_worker(connection, PLACES[number % len(PLACES)], phone=phone)
        ids.append(worker_id)
        phones[worker_id] = phone
    return World(connection, AsyncSession(bind=connection), opds, asns, ids, phones)


async def test_counts_follow_every_kind_of_change(connection: AsyncConnection) -> None:
    world = await build_world(connection, workers=6)
    w1, w2, w3, w4, w5, w6 = world.workers
    await assert_in_step(connection, "workers only")

    s1 = await world.enroll(w1)
    s2 = await world.enroll(w2, asn=1)
    s3 = await world.enroll(w3, asn=2)
    s4 = await world.enroll(w4)
    await assert_in_step(connection, "enroll")
    assert await world.move(E.ACCEPT, s1)
    await assert_in_step(connection, "accept")
    assert await world.move(E.RETURN, s2, return_reason="foto buram")
    await assert_in_step(connection, "return")
    # The ASN corrects the enrollment to another worker: the row moves from w2 to w5.
    assert await world.move(E.RESUBMIT, s2, worker_id=w5)
    await assert_in_step(connection, "resubmit to another worker")
    assert await world.move(E.ACCEPT, s3)
    moved = await state.transition_many(
        connection, E.SUBMIT, Sponsorship.opd_id == world.opds[0], now=NOW
    )
    assert [sid for sid, _ in moved] == [s1, s3]
    await assert_in_step(connection, "submit in bulk")
    assert await world.move(E.ACTIVATE, s1, kpj="23000000001")
    assert await world.move(E.ACTIVATE, s3, kpj="23000000003")
    assert await world.move(E.HAND_OVER, s3)
    await assert_in_step(connection, "card")
    lapsed = await dues_queries.mark_lapsed(connection, [s1, s3, s4], now=NOW, read_at=NOW)
    assert lapsed == [s1, s3]
    await assert_in_step(connection, "lapse by the planner")
    # w1 lapsed, enrolled again, and ended: two closed statuses, then a second ENDED row.
    again = await world.enroll(w1, asn=1)
    assert await world.move(E.STOP, again, end_reason="asn_stopped")
    third = await world.enroll(w1)
    assert await world.move(E.REFUSE, third)
    await assert_in_step(connection, "ended twice")
    await world.readdress(w1, PLACES[2])
    await assert_in_step(connection, "address change")
    await world.readdress(w6, ("Baru", "Selebar", "Kota Bengkulu"))
    await assert_in_step(connection, "address change without sponsorships")
    await world.erase(w4)
    await world.erase(w1)
    await assert_in_step(connection, "erasure")
    assert await world.erased(w1)


async def test_one_statement_moving_two_rows_of_one_worker(connection: AsyncConnection) -> None:
    # PostgreSQL runs row triggers after the whole statement: per-row counting would see
    # both rows already moved. The statement triggers count such a swap as no change.
    world = await build_world(connection, workers=2)
    w1, w2 = world.workers
    first = await add_sponsorship(
        connection, worker_id=w1, asn_id=world.asns[0][0], opd_id=world.opds[0],
        status=S.LAPSED, created_at=NOW,
    )  # fmt: skip
    second = await add_sponsorship(
        connection, worker_id=w1, asn_id=world.asns[1][0], opd_id=world.opds[1],
        status=S.ENDED, created_at=NOW,
    )  # fmt: skip
    await add_sponsorship(
        connection, worker_id=w2, asn_id=world.asns[0][0], opd_id=world.opds[0],
        status=S.ENDED, created_at=NOW,
    )  # fmt: skip
    await assert_in_step(connection, "seeded")

    await connection.execute(
        update(Sponsorship)
        .where(Sponsorship.id.in_([first, second]))
        .values(
            status=text("CASE status WHEN 'lapsed' THEN 'ended' ELSE 'lapsed' END"),
        )
    )
    await assert_in_step(connection, "swap in one statement")
    await connection.execute(
        update(Sponsorship)
        .where(Sponsorship.id == first)
        .values(asn_id=world.asns[2][0], status=S.WAITING_FOR_PIC)
    )
    await assert_in_step(connection, "reopened under another ASN")
    await connection.execute(
        update(Sponsorship).where(Sponsorship.id == first).values(asn_id=world.asns[0][0])
    )
    await assert_in_step(connection, "an open sponsorship moved to another ASN")
    await connection.execute(
        update(Sponsorship)
        .where(Sponsorship.worker_id == w1)
        .values(
            opd_id=world.opds[1],
            first_month=date(2026, 11, 1),
            paid_until=date(2026, 12, 1),
            paid_after_gap=True,
        )
    )
    await assert_in_step(connection, "OPD, first month and paid-until of two rows at once")
    await connection.execute(update(Sponsorship).values(paid_until=None, paid_after_gap=False))
    await assert_in_step(connection, "paid-until cleared everywhere")
    await connection.execute(
        update(Sponsorship).where(Sponsorship.worker_id == w1).values(status=S.ENDED)
    )
    await assert_in_step(connection, "both ended in one statement")
    await connection.execute(
        update(Sponsorship).where(Sponsorship.worker_id == w1).values(worker_id=w2)
    )
    await assert_in_step(connection, "both handed to another worker in one statement")
    await connection.execute(
        update(Worker).where(Worker.id.in_([w1, w2])).values(village="Lain", regency=None)
    )
    await assert_in_step(connection, "two workers moved in one statement")
    await connection.execute(delete(Sponsorship).where(Sponsorship.worker_id == w2))
    await assert_in_step(connection, "a worker's rows deleted in one statement")
    assert await stored_counts(connection) == Counter()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_sequences_keep_the_counts_in_step(
    connection: AsyncConnection, seed: int
) -> None:
    chance = random.Random(seed)
    world = await build_world(connection, workers=8)
    sponsorships: list[int] = []
    events = [E.ACCEPT, E.RETURN, E.SUBMIT, E.ACTIVATE, E.HAND_OVER, E.STOP, E.REFUSE]
    for step in range(70):
        worker = chance.choice(world.workers)
        roll = chance.random()
        erased = await world.erased(worker)
        if roll < 0.25 and not erased and await world.open_of(worker) is None:
            sponsorships.append(await world.enroll(worker, asn=chance.randrange(3)))
            done = "enroll"
        elif roll < 0.6 and sponsorships:
            event = chance.choice(events)
            values: dict[str, object] = {}
            if event is E.ACTIVATE:
                values["kpj"] = f"230{step:08d}"
            await world.move(event, chance.choice(sponsorships), **values)
            done = str(event)
        elif roll < 0.65 and sponsorships:
            free = [w for w in world.workers if await world.open_of(w) is None]
            free = [w for w in free if not await world.erased(w)]
            if free:
                await world.move(E.RESUBMIT, chance.choice(sponsorships), worker_id=free[0])
            done = "resubmit"
        elif roll < 0.75 and sponsorships:
            picked = chance.sample(sponsorships, min(3, len(sponsorships)))
            await dues_queries.mark_lapsed(connection, picked, now=NOW, read_at=NOW)
            done = "lapse"
        elif roll < 0.82:
            await state.transition_many(
                connection, E.SUBMIT, Sponsorship.opd_id == chance.choice(world.opds), now=NOW
            )
            done = "submit in bulk"
        elif roll < 0.95 and not erased:
            await world.readdress(worker, chance.choice(PLACES))
            done = "address"
        elif not erased:
            await world.erase(worker)
            done = "erase"
        else:
            continue
        await assert_in_step(connection, f"seed {seed} step {step}: {done}")


async def test_backfill_counts_existing_rows_and_downgrade_removes_the_triggers(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'before.sqlite3'}"
    await upgrade_to_head(url)
    await downgrade_to(url, "0014_coverage")
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            world = await build_world(connection, workers=5)
            for number, worker in enumerate(world.workers):
                await world.enroll(worker, asn=number)
            first = await world.open_of(world.workers[0])
            assert first is not None and await world.move(E.STOP, first)
            await world.enroll(world.workers[0])
            await world.erase(world.workers[1])
        await upgrade_to_head(url)
        async with engine.begin() as connection:
            expected = await expected_counts(connection)
            assert sum(expected.values()) == 6
            assert await stored_counts(connection) == expected
            stored, counted = await open_per_asn(connection)
            assert stored == counted and sum(counted.values()) == 4
            stored_groups, counted_groups = await groups(connection)
            assert stored_groups == counted_groups and sum(counted_groups.values()) == 6
            await world_after_upgrade(connection)
            await assert_in_step(connection, "a write after the backfill")
        await downgrade_to(url, "0014_coverage")
        async with engine.begin() as connection:
            triggers = await connection.scalar(
                text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")
            )
            assert triggers == 0
            # Writes still work without the table.
            await connection.execute(
                update(Sponsorship).values(status_changed_at=NOW + timedelta(days=1))
            )
    finally:
        await engine.dispose()


async def world_after_upgrade(connection: AsyncConnection) -> None:
    worker = await connection.scalar(select(func.min(Worker.id)))
    await connection.execute(
        update(Sponsorship).where(Sponsorship.worker_id == worker).values(status=S.ENDED)
    )


async def _blocked_or_done(engine: AsyncEngine, pid: int, task: asyncio.Task[None]) -> None:
    """Until the backend `pid` waits for a lock, or `task` ended (a bounded poll)."""
    async with engine.connect() as watcher:
        for _ in range(400):
            if task.done():
                return
            waiting = await watcher.scalar(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid},
            )
            if waiting == "Lock":
                return
            await asyncio.sleep(0.025)


@pytest.mark.parametrize("first", ["address", "status"])
async def test_a_move_and_a_status_change_in_two_transactions_at_once(
    db_engine: AsyncEngine, first: str
) -> None:
    """PostgreSQL: the worker's new address and their sponsorship's lapse, committed by
    two transactions that overlap, either one first: both land in the counts."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    async with db_engine.begin() as connection:
        world = await build_world(connection, workers=1)
        (worker,) = world.workers
        sponsorship = await add_sponsorship(
            connection, worker_id=worker, asn_id=world.asns[0][0], opd_id=world.opds[0],
            status=S.ACTIVE, created_at=NOW,
        )  # fmt: skip

    async def readdress(connection: AsyncConnection) -> None:
        await connection.execute(
            update(Worker)
            .where(Worker.id == worker)
            .values(village="Pindah", district="Baru", regency=None)
        )

    async def lapse(connection: AsyncConnection) -> None:
        moved = await dues_queries.mark_lapsed(connection, [sponsorship], now=NOW, read_at=NOW)
        assert moved == [sponsorship]

    writes = {"address": readdress, "status": lapse}
    later = "status" if first == "address" else "address"
    async with db_engine.connect() as holder, db_engine.connect() as other:
        await holder.begin()
        await writes[first](holder)
        pid = await other.scalar(text("SELECT pg_backend_pid()"))
        await other.commit()

        async def second() -> None:
            async with other.begin():
                await writes[later](other)

        task = asyncio.create_task(second())
        await _blocked_or_done(db_engine, int(pid or 0), task)
        await holder.commit()
        await task
    async with db_engine.connect() as connection:
        assert await stored_counts(connection) == {(False, "", "Baru", "Pindah", "lapsed"): 1}
        await assert_in_step(connection, f"{first} first")


async def test_one_statement_moving_several_sponsorships_of_one_asn(
    connection: AsyncConnection,
) -> None:
    """`asn.open_sponsorships` when one statement moves several rows of one ASN at once
    (PostgreSQL sums them per ASN in one statement trigger): a bulk lapse, several rows
    handed to another ASN while one of them closes, and rows that change neither ASN
    nor openness."""
    world = await build_world(connection, workers=6)
    (a1, opd1), (a2, _opd2), (a3, _) = world.asns
    rows = [
        await add_sponsorship(
            connection,
            worker_id=worker,
            asn_id=a1,
            opd_id=opd1,
            status=S.ACTIVE if number < 4 else S.WAITING_FOR_PIC,
            created_at=NOW,
        )
        for number, worker in enumerate(world.workers)
    ]
    await assert_in_step(connection, "six open under one ASN")
    stored, _ = await open_per_asn(connection)
    assert stored[a1] == 6

    lapsed = await dues_queries.mark_lapsed(connection, rows[:3], now=NOW, read_at=NOW)
    assert lapsed == rows[:3]
    await assert_in_step(connection, "three of one ASN lapsed in one statement")
    stored, _ = await open_per_asn(connection)
    assert stored[a1] == 3

    # Three rows go to another ASN in one statement; one of them (open) also ends, one was
    # lapsed (closed, so it moves no count), one stays open.
    await connection.execute(
        update(Sponsorship)
        .where(Sponsorship.id.in_([rows[0], rows[3], rows[4]]))
        .values(
            asn_id=a2,
            status=text(f"CASE id WHEN {rows[3]} THEN 'ended' ELSE status END"),
        )
    )
    await assert_in_step(connection, "three rows to another ASN, one of them ending")
    stored, _ = await open_per_asn(connection)
    assert (stored[a1], stored[a2]) == (1, 1)

    # Every row to a third ASN, reopened: each ASN's count moves by several at once.
    await connection.execute(
        update(Sponsorship)
        .where(Sponsorship.id.in_(rows))
        .values(asn_id=a3, status=S.WAITING_FOR_PIC)
    )
    await assert_in_step(connection, "all rows to a third ASN, reopened")
    stored, _ = await open_per_asn(connection)
    assert (stored[a1], stored[a2], stored[a3]) == (0, 0, 6)

    # A statement changing neither ASN nor openness (open to open, closed to closed).
    await connection.execute(
        update(Sponsorship).where(Sponsorship.id.in_(rows[:2])).values(status=S.ACTIVE)
    )
    await assert_in_step(connection, "open to open")
    stored, _ = await open_per_asn(connection)
    assert stored[a3] == 6
    await connection.execute(delete(Sponsorship).where(Sponsorship.id.in_(rows[1:5])))
    await assert_in_step(connection, "four rows of one ASN deleted in one statement")
    stored, _ = await open_per_asn(connection)
    assert stored[a3] == 2


async def test_two_bulk_lapses_of_shared_asns_at_once(db_engine: AsyncEngine) -> None:
    """PostgreSQL: two transactions lapsing sponsorships of the same two ASNs, listed in
    opposite orders, both commit (the ASN rows are locked in id order: no deadlock) and
    the counts hold both."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    async with db_engine.begin() as connection:
        world = await build_world(connection, workers=4)
        (a1, opd1), (a2, opd2), _ = world.asns
        rows = [
            await add_sponsorship(
                connection,
                worker_id=worker,
                asn_id=asn,
                opd_id=opd,
                status=S.ACTIVE,
                created_at=NOW,
            )
            for worker, (asn, opd) in zip(
                world.workers, [(a1, opd1), (a2, opd2), (a1, opd1), (a2, opd2)], strict=True
            )
        ]
    # The first lapses a1's row then a2's, the second a2's then a1's.
    first, second = [rows[0], rows[1]], [rows[3], rows[2]]
    async with db_engine.connect() as holder, db_engine.connect() as other:
        await holder.begin()
        assert await dues_queries.mark_lapsed(holder, first, now=NOW, read_at=NOW) == first
        pid = await other.scalar(text("SELECT pg_backend_pid()"))
        await other.commit()

        async def lapse_second() -> None:
            async with other.begin():
                changed = await dues_queries.mark_lapsed(other, second, now=NOW, read_at=NOW)
                assert changed == sorted(second)

        task = asyncio.create_task(lapse_second())
        await _blocked_or_done(db_engine, int(pid or 0), task)
        await holder.commit()
        await task
    async with db_engine.connect() as connection:
        stored, counted = await open_per_asn(connection)
        assert stored == counted
        assert (stored[a1], stored[a2]) == (0, 0)
        await assert_in_step(connection, "two bulk lapses at once")
