"""The coverage report counts ASN and workers per OPD from real rows."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import date

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.dues import PaidStanding
from domain.months import add_months
from domain.vocabulary import (
    Occupation,
    PaymentPlan,
    PaymentStatus,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from domain.workdays import WorkCalendar
from storage.coverage import CoverageRow, coverage, coverage_total, paid_standings
from storage.models import Payment, Sponsorship, Worker
from storage.paid_until import settle_paid_until
from tests.storage.test_roles import NOW, add_account, add_asn, add_opd

S = SponsorshipStatus
_workers = itertools.count(1)


async def add_worker(connection: AsyncConnection) -> int:
    number = next(_workers)
    result = await connection.execute(
        insert(Worker).values(
            nik_hash=number.to_bytes(32, "big"),
            nik_ciphertext=b"x" * 40,
            nik_masked=f"3201********{number:04d}",
            full_name="Siti Aminah",
            birth_date=date(1990, 8, 7),
            sex=Sex.FEMALE,
            phone_e164=None,
            village="Sukamaju",
            district="Ciawi",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


async def sponsor(
    connection: AsyncConnection,
    *,
    asn_id: int,
    opd_id: int,
    status: SponsorshipStatus,
    worker_id: int | None = None,
    first_month: date = date(2026, 12, 1),
) -> int:
    """A sponsorship; returns its worker's id (`sponsorship_of` gives the sponsorship's)."""
    worker = worker_id if worker_id is not None else await add_worker(connection)
    await connection.execute(
        insert(Sponsorship).values(
            worker_id=worker,
            asn_id=asn_id,
            opd_id=opd_id,
            occupation=Occupation.DRIVER,
            plan=PaymentPlan.MONTHLY,
            first_month=first_month,
            status=status,
            worker_consent=WorkerConsent.NOT_REQUESTED,
            created_at=NOW,
            status_changed_at=NOW,
        )
    )
    return worker


_accounts = itertools.count(1)


async def asn_in(connection: AsyncConnection, opd_id: int) -> int:
    account = await add_account(connection, f"cov{next(_accounts)}")
    return await add_asn(connection, opd_id=opd_id, account_id=account)


@pytest.fixture
async def connection(db_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with db_engine.begin() as connection:
        yield connection


def statuses(**counts: int) -> dict[SponsorshipStatus, int]:
    return {status: counts.get(status.value, 0) for status in SponsorshipStatus}


def standings(**counts: int) -> dict[PaidStanding, int]:
    return {standing: counts.get(standing.value, 0) for standing in PaidStanding}


#: The report's day (Friday 20 November 2026: November's dues, due Monday the 16th, overdue).
TODAY = date(2026, 11, 20)
CALENDAR = WorkCalendar([])


async def test_coverage_counts_per_opd_with_zeros_and_a_total(
    db_engine: AsyncEngine, connection: AsyncConnection
) -> None:
    dinkes = await add_opd(connection, "DINKES", "Dinas Kesehatan")
    bappeda = await add_opd(connection, "BAPPEDA", "Bappeda")
    await add_opd(connection, "EMPTY", "Dinas Kosong")
    await add_opd(connection, "GONE", "Dinas Dihapus", active=False)
    old = await add_opd(connection, "OLD", "Dinas Lama", active=False)

    # DINKES: one ASN sponsoring two workers, one whose only sponsorship ended, one idle.
    busy = await asn_in(connection, dinkes)
    await sponsor(connection, asn_id=busy, opd_id=dinkes, status=S.WAITING_FOR_PIC)
    await sponsor(connection, asn_id=busy, opd_id=dinkes, status=S.ACTIVE)
    ended = await asn_in(connection, dinkes)
    twice = await sponsor(connection, asn_id=ended, opd_id=dinkes, status=S.ENDED)
    # The same worker ended twice in DINKES counts once there.
    await sponsor(connection, asn_id=ended, opd_id=dinkes, status=S.ENDED, worker_id=twice)
    await asn_in(connection, dinkes)
    # BAPPEDA: an ASN with a returned enrollment, and one who moved here from
    # DINKES: the sponsorship stays with DINKES (its PIC handles it), the ASN counts here.
    await sponsor(
        connection, asn_id=await asn_in(connection, bappeda), opd_id=bappeda, status=S.RETURNED
    )
    moved = await asn_in(connection, bappeda)
    await sponsor(connection, asn_id=moved, opd_id=dinkes, status=S.CARD_HANDED_OVER)
    await sponsor(connection, asn_id=moved, opd_id=dinkes, status=S.LAPSED)
    # An inactive OPD that still has a registered ASN stays in the report.
    await asn_in(connection, old)

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(db_engine.sync_engine, "before_cursor_execute", count)
    try:
        rows = await coverage(connection, today=TODAY, calendar=CALENDAR)
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", count)

    # ASN, workers, the paid-until groups (no gap here: no read of payments) and the OPDs.
    assert len(statements) == 4
    assert rows == [
        CoverageRow("BAPPEDA", "Bappeda", 2, 2, statuses(returned=1), standings()),
        CoverageRow(
            "DINKES",
            "Dinas Kesehatan",
            3,
            1,
            statuses(waiting_for_pic=1, active=1, ended=1, card_handed_over=1, lapsed=1),
            # Active and card handed over, first month December: nothing due yet.
            standings(up_to_date=2),
        ),
        CoverageRow("EMPTY", "Dinas Kosong", 0, 0, statuses(), standings()),
        CoverageRow("OLD", "Dinas Lama", 1, 0, statuses(), standings()),
    ]
    total = coverage_total(rows)
    assert (total.opd_code, total.asn_registered, total.asn_sponsoring, total.workers) == (
        "TOTAL",
        6,
        3,
        6,
    )
    assert total.by_status[S.ENDED] == 1
    assert rows[1].workers == 5


async def test_coverage_of_an_empty_province(connection: AsyncConnection) -> None:
    assert await coverage(connection, today=TODAY, calendar=CALENDAR) == []
    total = coverage_total([])
    assert (total.asn_registered, total.asn_sponsoring, total.workers) == (0, 0, 0)
    assert set(total.by_status) == set(SponsorshipStatus)
    assert total.paid == standings()


async def pay(
    connection: AsyncConnection, worker_id: int, months: list[date], **kw: object
) -> None:
    """Payments (one per month) of the sponsorship of `worker_id`, confirmed unless told."""
    sponsorship = (
        await connection.scalars(select(Sponsorship.id).where(Sponsorship.worker_id == worker_id))
    ).one()
    for month in months:
        await connection.execute(
            insert(Payment).values(
                sponsorship_id=sponsorship,
                first_month=month,
                months=1,
                amount=16_800,
                status=kw.get("status", PaymentStatus.CONFIRMED),
                recorded_at=NOW,
            )
        )
    # Written beside `storage.payments`: the derived paid-until is settled as they would.
    await settle_paid_until(connection, [sponsorship])


async def test_paid_until_distribution_from_confirmed_payments(
    connection: AsyncConnection,
) -> None:
    dinkes = await add_opd(connection, "DINKES", "Dinas Kesehatan")
    bappeda = await add_opd(connection, "BAPPEDA", "Bappeda")
    asn = await asn_in(connection, dinkes)
    june = date(2026, 6, 1)

    async def paid_through(opd: int, count: int, status: SponsorshipStatus = S.ACTIVE) -> int:
        worker = await sponsor(connection, asn_id=asn, opd_id=opd, status=status, first_month=june)
        await pay(connection, worker, [add_months(june, n) for n in range(count)])
        return worker

    await paid_through(dinkes, 7)  # through December: ahead
    await paid_through(dinkes, 6, S.CARD_HANDED_OVER)  # through November: current
    await paid_through(dinkes, 5)  # October: November overdue since the 17th
    await paid_through(dinkes, 5)
    await paid_through(bappeda, 4)  # September: two months overdue
    await paid_through(bappeda, 0)  # nothing since June: lapses at the next run
    # A gap (July unpaid) counts as a month overdue however much is paid after it.
    gap = await paid_through(bappeda, 1)
    await pay(connection, gap, [add_months(june, n) for n in range(2, 6)])
    # Not counted: a lapsed and a waiting sponsorship; a payment not yet confirmed.
    await paid_through(bappeda, 0, S.LAPSED)
    await paid_through(bappeda, 0, S.WAITING_FOR_PIC)
    pending = await paid_through(dinkes, 6)
    await pay(connection, pending, [date(2026, 12, 1)], status=PaymentStatus.RECORDED)

    rows = {row.opd_code: row for row in await coverage(connection, today=TODAY, calendar=CALENDAR)}

    assert rows["DINKES"].paid == standings(paid_ahead=1, up_to_date=2, arrears_1=2)
    assert rows["BAPPEDA"].paid == standings(arrears_1=1, arrears_2=1, arrears_3=1)
    assert coverage_total(rows.values()).paid == standings(
        paid_ahead=1, up_to_date=2, arrears_1=3, arrears_2=1, arrears_3=1
    )
    # One OPD's own read (the coverage page of a PIC) agrees with the province's.
    for code, opd in (("DINKES", dinkes), ("BAPPEDA", bappeda)):
        own = await paid_standings(connection, today=TODAY, calendar=CALENDAR, opd_id=opd)
        assert own == {opd: rows[code].paid}
    # A week earlier November was not yet due: those paid through October were current.
    earlier = await coverage(connection, today=date(2026, 11, 13), calendar=CALENDAR)
    assert {row.opd_code: row.paid for row in earlier}["DINKES"] == standings(
        paid_ahead=1, up_to_date=4
    )
