"""The coverage page's data (`storage.coverage.dashboard`) against a hand-built province.

The province (report day Wednesday 6 January 2027, WIB, three weeks shown: from
Monday 21 December 2026, across the new year):

- DINKES (target 4): ASN a1 sponsors w1 (active, paid through February: ahead),
  w2 (card handed over, paid December: up to date) and w6 (active from
  November, nothing paid: two months overdue); a2 sponsors w3 (waiting), w4
  (lapsed on 31 December) and w5 (ended: the worker erased their data); a3
  sponsors nobody.
- DIKBUD (no target): b1 sponsors w7 (returned) and w4 again (accepted, after
  the lapse in DINKES); b2's only sponsorship (w8) lapsed, so b2 is not sponsoring.
- EMPTY: active, nothing yet (a zero row). GONE: inactive and empty (left out).

Timestamps sit on the week boundaries in local time (UTC+7): 20 December
17:00 UTC is Monday 21 December 00:00 WIB (the first week); 3 January 16:59
UTC is Sunday 23:59 WIB (the second); 17:30 UTC is Monday 4 January (the third).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from domain.dues import PaidStanding
from domain.vocabulary import (
    Occupation,
    PaymentPlan,
    PaymentStatus,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from domain.workdays import WorkCalendar
from sertakan_data import COVERAGE_TARGETS, OPD_SEED, shipped
from storage import worker_side
from storage.audit import Actor
from storage.coverage import (
    AreaRow,
    AreaSort,
    CoverageDashboard,
    CoverageTargets,
    OpdRow,
    OpdSort,
    Progress,
    TargetsFileError,
    WeekPoint,
    by_district,
    dashboard,
    load_targets,
    sort_areas,
    sort_opds,
)
from storage.models import Payment, Sponsorship, Worker
from storage.paid_until import settle_paid_until
from tests.storage.test_roles import NOW, add_account, add_asn, add_opd

S = SponsorshipStatus
P = PaidStanding
TODAY = date(2027, 1, 6)
ZONE = ZoneInfo("Asia/Jakarta")
CALENDAR = WorkCalendar([])
TARGETS = CoverageTargets(overall=10, per_opd={"DINKES": 4, "NOWHERE": 7})
_numbers = itertools.count(1)


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def statuses(**counts: int) -> dict[SponsorshipStatus, int]:
    return {status: counts.get(status.value, 0) for status in SponsorshipStatus}


def standings(**counts: int) -> dict[PaidStanding, int]:
    return {standing: counts.get(standing.value, 0) for standing in PaidStanding}


async def add_worker(
    connection: AsyncConnection,
    place: tuple[str, str, str | None],
    *,
    phone: str | None = None,
) -> int:
    village, district, regency = place
    number = next(_numbers)
    result = await connection.execute(
        insert(Worker).values(
            nik_hash=(10_000 + number).to_bytes(32, "big"),
            nik_ciphertext=b"x" * 40,
            nik_masked=f"1771********{number:04d}",
            full_name=f"Pekerja {number}",
            birth_date=date(1990, 8, 7),
            sex=Sex.FEMALE,
            phone_e164=phone,
            village=village,
            district=district,
            regency=regency,
            created_at=NOW,
            updated_at=NOW,
        )
    )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


async def add_sponsorship(
    connection: AsyncConnection,
    *,
    worker_id: int,
    asn_id: int,
    opd_id: int,
    status: SponsorshipStatus,
    created_at: datetime,
    first_month: date = date(2026, 12, 1),
    kpj_imported_at: datetime | None = None,
    status_changed_at: datetime | None = None,
) -> int:
    result = await connection.execute(
        insert(Sponsorship).values(
            worker_id=worker_id,
            asn_id=asn_id,
            opd_id=opd_id,
            occupation=Occupation.DRIVER,
            plan=PaymentPlan.MONTHLY,
            first_month=first_month,
            status=status,
            worker_consent=WorkerConsent.GIVEN,
            kpj="23000000001" if kpj_imported_at else None,
            kpj_imported_at=kpj_imported_at,
            created_at=created_at,
            status_changed_at=status_changed_at or created_at,
        )
    )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


async def pay(connection: AsyncConnection, sponsorship_id: int, first: date, months: int) -> None:
    await connection.execute(
        insert(Payment).values(
            sponsorship_id=sponsorship_id,
            first_month=first,
            months=months,
            amount=16_800 * months,
            status=PaymentStatus.CONFIRMED,
            recorded_at=NOW,
        )
    )
    # Written beside `storage.payments`: the derived paid-until is settled as they would.
    await settle_paid_until(connection, [sponsorship_id])


async def asn_in(connection: AsyncConnection, opd_id: int) -> int:
    account = await add_account(connection, f"dash{next(_numbers)}")
    return await add_asn(connection, opd_id=opd_id, account_id=account)


@dataclass(frozen=True)
class Province:
    dinkes: int
    dikbud: int
    empty: int


@pytest.fixture
async def connection(db_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with db_engine.begin() as connection:
        yield connection


async def build_province(connection: AsyncConnection) -> Province:
    dinkes = await add_opd(connection, "DINKES", "Dinas Kesehatan")
    dikbud = await add_opd(connection, "DIKBUD", "Dinas Pendidikan dan Kebudayaan")
    empty = await add_opd(connection, "EMPTY", "Dinas Kosong")
    await add_opd(connection, "GONE", "Dinas Lama", active=False)
    a1, a2 = await asn_in(connection, dinkes), await asn_in(connection, dinkes)
    await asn_in(connection, dinkes)
    b1, b2 = await asn_in(connection, dikbud), await asn_in(connection, dikbud)

    sukamaju = ("Sukamaju", "Ciawi", "Bogor")
    cibodas = ("Cibodas", "Ciawi", None)
    talang = ("Talang", "Selebar", "Kota Bengkulu")
    w1 = await add_worker(connection, sukamaju)
    w2 = await add_worker(connection, sukamaju)
    w3 = await add_worker(connection, cibodas)
    w4 = await add_worker(connection, cibodas)
    w5 = await add_worker(connection, talang, phone="+6281299990005")
    w6 = await add_worker(connection, talang)
    w7 = await add_worker(connection, talang)
    w8 = await add_worker(connection, sukamaju)

    s1 = await add_sponsorship(
        connection,
        worker_id=w1,
        asn_id=a1,
        opd_id=dinkes,
        status=S.ACTIVE,
        created_at=utc(2026, 12, 20, 17, 0),
        kpj_imported_at=utc(2027, 1, 3, 16, 59),
    )
    await pay(connection, s1, date(2026, 12, 1), 3)  # December to February: ahead
    s2 = await add_sponsorship(
        connection,
        worker_id=w2,
        asn_id=a1,
        opd_id=dinkes,
        status=S.CARD_HANDED_OVER,
        created_at=utc(2026, 12, 20, 16, 59),  # Sunday 23:59 WIB: before the first week
        kpj_imported_at=utc(2027, 1, 3, 17, 30),
    )
    await pay(connection, s2, date(2026, 12, 1), 1)  # December: January not due yet
    await add_sponsorship(
        connection,
        worker_id=w6,
        asn_id=a1,
        opd_id=dinkes,
        status=S.ACTIVE,
        created_at=utc(2026, 10, 20, 3, 0),
        first_month=date(2026, 11, 1),
        kpj_imported_at=utc(2026, 10, 30, 3, 0),
    )
    await add_sponsorship(
        connection,
        worker_id=w3,
        asn_id=a2,
        opd_id=dinkes,
        status=S.WAITING_FOR_PIC,
        created_at=utc(2027, 1, 5, 2, 0),
    )
    await add_sponsorship(
        connection,
        worker_id=w4,
        asn_id=a2,
        opd_id=dinkes,
        status=S.LAPSED,
        created_at=utc(2026, 9, 1, 2, 0),
        kpj_imported_at=utc(2026, 9, 20, 2, 0),
        status_changed_at=utc(2026, 12, 31, 10, 0),
    )
    # w5 enrolled (waiting), then asked for their data to be erased: the real erasure.
    await add_sponsorship(
        connection,
        worker_id=w5,
        asn_id=a2,
        opd_id=dinkes,
        status=S.WAITING_FOR_PIC,
        created_at=utc(2026, 12, 29, 4, 0),
    )
    session = AsyncSession(bind=connection)
    erasure = await worker_side.erase_worker(
        session,
        phone_e164="+6281299990005",
        worker_id=w5,
        actor=Actor.admin("operator"),
        now=utc(2027, 1, 2, 4, 0),
    )
    assert erasure is not None
    await session.flush()
    await add_sponsorship(
        connection,
        worker_id=w7,
        asn_id=b1,
        opd_id=dikbud,
        status=S.RETURNED,
        created_at=utc(2026, 12, 22, 3, 0),
    )
    await add_sponsorship(
        connection,
        worker_id=w4,
        asn_id=b1,
        opd_id=dikbud,
        status=S.ACCEPTED,
        created_at=utc(2027, 1, 6, 2, 0),
    )
    await add_sponsorship(
        connection,
        worker_id=w8,
        asn_id=b2,
        opd_id=dikbud,
        status=S.LAPSED,
        created_at=utc(2026, 6, 1, 2, 0),
        status_changed_at=utc(2026, 12, 1, 2, 0),
    )
    return Province(dinkes=dinkes, dikbud=dikbud, empty=empty)


async def show(
    connection: AsyncConnection, opd_id: int | None, *, weeks: int = 3
) -> CoverageDashboard:
    return await dashboard(
        connection,
        opd_id=opd_id,
        today=TODAY,
        targets=TARGETS,
        calendar=CALENDAR,
        zone=ZONE,
        weeks=weeks,
    )


async def test_province_tiles_targets_weeks_and_tables(connection: AsyncConnection) -> None:
    province = await build_province(connection)

    board = await show(connection, None)

    assert (board.opd_id, board.scope_name, board.today) == (None, None, TODAY)
    tiles = board.tiles
    assert (tiles.asn_registered, tiles.asn_sponsoring) == (5, 3)
    # The erased worker's enrollment ended; the lapsed worker enrolled again elsewhere
    # counts in both statuses.
    assert tiles.workers_by_status == statuses(
        waiting_for_pic=1, returned=1, accepted=1, active=2, card_handed_over=1, lapsed=2, ended=1
    )
    assert tiles.workers == 9
    assert (tiles.active_cards, tiles.dues_bearing, tiles.paid_up) == (3, 3, 2)
    assert tiles.paid_up_share == pytest.approx(2 / 3)
    assert board.paid == standings(paid_ahead=1, up_to_date=1, arrears_2=1)
    assert board.progress == Progress(reached=3, target=10)
    assert board.progress.share == pytest.approx(0.3)
    assert board.weeks == (
        WeekPoint(date(2026, 12, 21), enrollments=2, cards=0, lapses=0),
        WeekPoint(date(2026, 12, 28), enrollments=1, cards=1, lapses=1),
        WeekPoint(date(2027, 1, 4), enrollments=2, cards=1, lapses=0),
    )

    rows = {row.opd_code: row for row in board.opds}
    assert list(rows) == ["DIKBUD", "DINKES", "EMPTY"]  # GONE: inactive and empty
    dinkes, dikbud, empty = rows["DINKES"], rows["DIKBUD"], rows["EMPTY"]
    assert (dinkes.opd_id, dinkes.asn_registered, dinkes.asn_sponsoring) == (
        province.dinkes,
        3,
        2,
    )
    assert dinkes.by_status == statuses(
        waiting_for_pic=1, active=2, card_handed_over=1, lapsed=1, ended=1
    )
    assert dinkes.paid == standings(paid_ahead=1, up_to_date=1, arrears_2=1)
    assert (dinkes.active_cards, dinkes.paid_up, dinkes.target) == (3, 2, 4)
    assert dinkes.progress.share == pytest.approx(0.75)
    assert (dikbud.asn_registered, dikbud.asn_sponsoring, dikbud.workers) == (2, 1, 3)
    assert dikbud.by_status == statuses(returned=1, accepted=1, lapsed=1)
    assert (dikbud.target, dikbud.progress.share, dikbud.paid_up_share) == (None, None, None)
    assert (empty.workers, empty.asn_registered, empty.paid) == (0, 0, standings())

    assert board.areas == (
        AreaRow("", "Ciawi", "Cibodas", statuses(waiting_for_pic=1, lapsed=1, accepted=1)),
        AreaRow("Bogor", "Ciawi", "Sukamaju", statuses(active=1, card_handed_over=1, lapsed=1)),
        AreaRow("Kota Bengkulu", "Selebar", "Talang", statuses(active=1, returned=1)),
        AreaRow("", "", "", statuses(ended=1), erased=True),
    )
    # The area rows add up to the OPD rows: every sponsorship is in one place.
    assert sum(area.workers for area in board.areas) == tiles.workers
    districts = by_district(board.areas)
    assert [(row.regency, row.district, row.workers) for row in districts] == [
        ("", "Ciawi", 3),
        ("Bogor", "Ciawi", 3),
        ("Kota Bengkulu", "Selebar", 2),
        ("", "", 1),
    ]


async def test_one_opd_sees_its_own_figures_only(connection: AsyncConnection) -> None:
    province = await build_province(connection)

    board = await show(connection, province.dinkes)

    assert (board.opd_id, board.scope_name) == (province.dinkes, "Dinas Kesehatan")
    assert [row.opd_code for row in board.opds] == ["DINKES"]
    assert (board.tiles.asn_registered, board.tiles.asn_sponsoring, board.tiles.workers) == (
        3,
        2,
        6,
    )
    assert board.progress == Progress(reached=3, target=4)
    assert board.paid == standings(paid_ahead=1, up_to_date=1, arrears_2=1)
    assert (board.tiles.dues_bearing, board.tiles.paid_up) == (3, 2)
    assert board.weeks == (
        WeekPoint(date(2026, 12, 21), enrollments=1, cards=0, lapses=0),
        WeekPoint(date(2026, 12, 28), enrollments=1, cards=1, lapses=1),
        WeekPoint(date(2027, 1, 4), enrollments=1, cards=1, lapses=0),
    )
    assert [(area.village, area.workers) for area in board.areas] == [
        ("Cibodas", 2),
        ("Sukamaju", 2),
        ("Talang", 1),
        ("", 1),
    ]
    # DIKBUD has no target of its own; an OPD that does not exist shows nothing.
    assert (await show(connection, province.dikbud)).progress == Progress(0, None)
    nowhere = await show(connection, 999_999)
    assert (nowhere.scope_name, nowhere.opds, nowhere.tiles.workers, nowhere.areas) == (
        None,
        (),
        0,
        (),
    )
    assert [week.enrollments for week in nowhere.weeks] == [0, 0, 0]


async def test_weeks_reach_back_and_a_year_boundary_week_is_one_week(
    connection: AsyncConnection,
) -> None:
    await build_province(connection)

    board = await show(connection, None, weeks=16)

    assert len(board.weeks) == 16
    assert board.weeks[0].week_start == date(2026, 9, 21)
    assert all(week.week_start.weekday() == 0 for week in board.weeks)
    # The week of 28 December 2026 to 3 January 2027 is one bucket, not two.
    assert date(2027, 1, 1) not in [week.week_start for week in board.weeks]
    by_start = {week.week_start: week for week in board.weeks}
    # w6's card, imported 30 October (Friday), and the ones already seen.
    assert by_start[date(2026, 10, 26)].cards == 1
    assert sum(week.cards for week in board.weeks) == 3
    # w8 lapsed on 1 December, w4 on 31 December.
    assert by_start[date(2026, 11, 30)].lapses == 1
    assert sum(week.lapses for week in board.weeks) == 2
    # w6 enrolled on 20 October.
    assert by_start[date(2026, 10, 19)].enrollments == 1
    # One week: the current one only, from its Monday.
    single = await show(connection, None, weeks=1)
    assert single.weeks == (WeekPoint(date(2027, 1, 4), enrollments=2, cards=1, lapses=0),)
    with pytest.raises(ValueError):
        await show(connection, None, weeks=0)


async def test_statement_count_does_not_grow_with_the_opds(
    db_engine: AsyncEngine, connection: AsyncConnection
) -> None:
    await build_province(connection)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(db_engine.sync_engine, "before_cursor_execute", count)
    try:
        await show(connection, None)
        few = len(statements)
        for number in range(30):
            opd = await add_opd(connection, f"X{number:02d}", f"Dinas {number}")
            await asn_in(connection, opd)
        statements.clear()
        board = await show(connection, None)
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", count)
    assert len(board.opds) == 33
    # ASN, workers, the paid-until groups, OPDs, the weekly series (one UNION) and the
    # villages.
    assert len(statements) == few == 6


def test_sort_opds_by_any_column_with_missing_values_last() -> None:
    def row(code: str, name: str, *, waiting: int, cards: int, target: int | None) -> OpdRow:
        return OpdRow(
            opd_id=0,
            opd_code=code,
            opd_name=name,
            asn_registered=len(name),
            asn_sponsoring=0,
            by_status=statuses(waiting_for_pic=waiting, active=cards),
            paid=standings(up_to_date=cards),
            target=target,
        )

    rows = [
        row("B", "beta", waiting=2, cards=5, target=10),
        row("A", "Alfa", waiting=2, cards=1, target=None),
        row("C", "gamma", waiting=0, cards=3, target=4),
    ]

    def codes(ordered: list[OpdRow]) -> list[str]:
        return [r.opd_code for r in ordered]

    assert codes(sort_opds(rows)) == ["A", "B", "C"]
    assert codes(sort_opds(rows, OpdSort.NAME, descending=True)) == ["C", "B", "A"]
    # Ties keep code order in both directions.
    assert codes(sort_opds(rows, OpdSort.WAITING)) == ["C", "A", "B"]
    assert codes(sort_opds(rows, OpdSort.WAITING, descending=True)) == ["A", "B", "C"]
    assert codes(sort_opds(rows, OpdSort.PROGRESS, descending=True)) == ["C", "B", "A"]
    assert codes(sort_opds(rows, OpdSort.PROGRESS)) == ["B", "C", "A"]
    assert codes(sort_opds(rows, OpdSort.TARGET)) == ["C", "B", "A"]
    assert codes(sort_opds(rows, OpdSort.ASN_REGISTERED)) == ["A", "B", "C"]
    assert codes(sort_opds(rows, OpdSort.ACTIVE_CARDS, descending=True)) == ["B", "C", "A"]
    for key in OpdSort:  # every column sorts (no KeyError, no comparison of None)
        assert sorted(codes(sort_opds(rows, key))) == ["A", "B", "C"]
    areas = [
        AreaRow("R", "D1", "v2", statuses(active=1)),
        AreaRow("", "", "", statuses(ended=4), erased=True),
        AreaRow("R", "D1", "V1", statuses(lapsed=2)),
    ]
    assert [a.village for a in sort_areas(areas)] == ["V1", "v2", ""]
    assert [a.village for a in sort_areas(areas, AreaSort.WORKERS, descending=True)] == [
        "",
        "V1",
        "v2",
    ]


def test_load_targets_reads_the_file_and_refuses_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "targets.csv"
    good.write_text("opd_code,target_workers\nTOTAL,144_000\n\nDINKES, 3200\nDIKBUD,0\n")
    targets = load_targets(good)
    assert targets == CoverageTargets(overall=144_000, per_opd={"DINKES": 3200, "DIKBUD": 0})
    assert (targets.for_opd("DIKBUD"), targets.for_opd("OTHER")) == (0, None)
    # A target of 0 is "no target": no share (never a division by zero).
    assert Progress(reached=5, target=0).share is None
    for content, error in [
        ("code,target\nTOTAL,1\n", "first line"),
        ("opd_code,target_workers\nDINKES,-5\n", "line 2"),
        ("opd_code,target_workers\nDINKES,1\nDINKES,2\n", "line 3: DINKES appears twice"),
        ("opd_code,target_workers\nTOTAL,1\ntotal,2\n", "a second TOTAL"),
        ("opd_code,target_workers\nDINKES\n", "line 2"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(content)
        with pytest.raises(TargetsFileError, match=error):
            load_targets(bad)
    with pytest.raises(TargetsFileError, match="cannot read"):
        load_targets(tmp_path / "missing.csv")


def test_shipped_targets_cover_every_seeded_opd_and_add_up_to_the_province() -> None:
    targets = load_targets(shipped(COVERAGE_TARGETS))
    seeded = [
        line.split(",", 1)[0] for line in shipped(OPD_SEED).read_text().splitlines()[1:] if line
    ]
    assert targets.overall == 144_000
    assert sorted(targets.per_opd) == sorted(seeded)
    assert sum(targets.per_opd.values()) == targets.overall
