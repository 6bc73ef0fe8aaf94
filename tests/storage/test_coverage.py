"""The coverage report counts ASN and workers per OPD from real rows."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import date

import pytest
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.vocabulary import (
    Occupation,
    PaymentPlan,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from storage.coverage import CoverageRow, coverage, coverage_total
from storage.models import Sponsorship, Worker
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
) -> int:
    worker = worker_id if worker_id is not None else await add_worker(connection)
    await connection.execute(
        insert(Sponsorship).values(
            worker_id=worker,
            asn_id=asn_id,
            opd_id=opd_id,
            occupation=Occupation.DRIVER,
            plan=PaymentPlan.MONTHLY,
            first_month=date(2026, 12, 1),
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
        rows = await coverage(connection)
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", count)

    assert len(statements) == 3
    assert rows == [
        CoverageRow("BAPPEDA", "Bappeda", 2, 2, statuses(returned=1)),
        CoverageRow(
            "DINKES",
            "Dinas Kesehatan",
            3,
            1,
            statuses(waiting_for_pic=1, active=1, ended=1, card_handed_over=1, lapsed=1),
        ),
        CoverageRow("EMPTY", "Dinas Kosong", 0, 0, statuses()),
        CoverageRow("OLD", "Dinas Lama", 1, 0, statuses()),
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
    assert await coverage(connection) == []
    total = coverage_total([])
    assert (total.asn_registered, total.asn_sponsoring, total.workers) == (0, 0, 0)
    assert set(total.by_status) == set(SponsorshipStatus)
