"""The coverage report per OPD (PRODUCT 6): ASN registered, ASN sponsoring, workers by
status, and the paid-until distribution of the dues-bearing sponsorships.

Four GROUP BY queries for the whole province, whatever the number of OPDs: the
paid-until standing is counted from `sponsorship.paid_until`, which
`storage.paid_until` derives from the confirmed payments in the transaction that
changes them, once per distinct first unpaid month, as thousands share one.
The counts the page reads for the province (villages, sponsoring ASN, workers per
OPD and status, paid-until groups) come from tables that database triggers keep in
step with every write (migration 0015_coverage_counts: `coverage_area`,
`coverage_group`, `asn.open_sponsorships`); `areas_afresh` is the join they
replace, still read for one OPD.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Select,
    case,
    distinct,
    func,
    select,
    text,
    union_all,
)
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.dues import PaidRun, PaidStanding, paid_standing, run_standing
from domain.vocabulary import SponsorshipStatus
from domain.workdays import WorkCalendar
from storage import payments
from storage.models import (
    NO_PAID_MONTH,
    SPONSORSHIP_IS_OPEN,
    Asn,
    CoverageArea,
    CoverageGroup,
    Opd,
    Sponsorship,
    Worker,
)

TOTAL_CODE = "TOTAL"
#: Lapsed and ended: the statuses a worker may hold several sponsorships in (counted DISTINCT).
_IS_CLOSED = text("sponsorship.status IN ('lapsed', 'ended')")
_CLOSED_STATUSES = tuple(status.value for status in SponsorshipStatus if not status.is_open)
#: The statuses that bear dues: the paid-until distribution's.
_DUES_BEARING = (SponsorshipStatus.ACTIVE.value, SponsorshipStatus.CARD_HANDED_OVER.value)


@dataclasses.dataclass(frozen=True, slots=True)
class CoverageRow:
    """One OPD's figures.

    `asn_registered` and `asn_sponsoring` count ASN by the ASN's current OPD; an
    ASN is sponsoring with at least one open sponsorship (any status but lapsed
    and ended). `by_status` counts workers by the status of their sponsorship in
    the OPD that handles it (the sponsor's OPD at enrollment) and has every
    status as a key, zeros included. `paid` counts the dues-bearing sponsorships
    (active, card handed over) of that OPD by `PaidStanding` on the report's
    day, every standing as a key.
    """

    opd_code: str
    opd_name: str
    asn_registered: int
    asn_sponsoring: int
    by_status: dict[SponsorshipStatus, int]
    paid: dict[PaidStanding, int]

    @property
    def workers(self) -> int:
        """Workers in any status (a worker counts once per status they have here)."""
        return sum(self.by_status.values())


def _asn_counts(opd_id: int | None = None) -> Select[tuple[int, int, int]]:
    """Per OPD: ASN registered, and those with an open sponsorship (any status but
    lapsed and ended), by the ASN's current OPD.

    From `ix_asn_opd_open` alone: `asn.open_sponsorships` is kept by triggers
    (migration 0015_coverage_counts). Counting the open sponsorships' ASN afresh cost
    60 ms on a quiet machine at 144,000 sponsorships (an IN list on SQLite, a hash join
    on PostgreSQL, whose IN could turn into a scan per ASN with stale statistics).
    """
    sponsoring = func.sum(case((Asn.open_sponsorships > 0, 1), else_=0))
    query = select(Asn.opd_id, func.count(), sponsoring).group_by(Asn.opd_id)
    return query if opd_id is None else query.where(Asn.opd_id == opd_id)


def _worker_counts(opd_id: int | None = None) -> CompoundSelect[tuple[int, str, int]]:
    """Per OPD and status, the workers with a sponsorship in it.

    An open sponsorship is the only open one of its worker (PRODUCT 3), so the open
    statuses are sponsorship counts, summed from `coverage_group` (kept by triggers,
    3,735 rows at 144,000 sponsorships); only a lapsed or ended worker may have
    several rows (ended twice in one OPD) and is counted DISTINCT off
    `ix_sponsorship_coverage` (9 % of the rows).
    """
    group = CoverageGroup.__table__.c
    open_rows = select(group.opd_id, group.status, func.sum(group.sponsorships)).where(
        group.status.not_in(_CLOSED_STATUSES), group.sponsorships > 0
    )
    closed_rows = select(
        Sponsorship.opd_id, Sponsorship.status, func.count(distinct(Sponsorship.worker_id))
    ).where(_IS_CLOSED)
    if opd_id is not None:
        open_rows = open_rows.where(group.opd_id == opd_id)
        closed_rows = closed_rows.where(Sponsorship.opd_id == opd_id)
    # Grouped in the primary key's and `ix_sponsorship_coverage`'s order: no sort.
    return union_all(
        open_rows.group_by(group.status, group.opd_id),
        closed_rows.group_by(Sponsorship.status, Sponsorship.opd_id),
    )


async def paid_standings(
    connection: AsyncConnection,
    *,
    today: date,
    calendar: WorkCalendar,
    opd_id: int | None = None,
) -> dict[int, dict[PaidStanding, int]]:
    """Per OPD id, its dues-bearing sponsorships counted by `PaidStanding` as of `today`
    (`opd_id`: that OPD's only).

    Read from `coverage_group` (the dues-bearing sponsorships counted per OPD,
    first month and derived paid-until, kept by triggers: 2,763 rows for the
    bench's 126,000): an unbroken run's standing depends on its first unpaid month alone,
    so a group is classified once. The few sponsorships with confirmed months after
    a gap (`paid_after_gap`) are classified from their payments.
    """
    dues_bearing = text("sponsorship.status IN ('active', 'card_handed_over')")
    group = CoverageGroup.__table__.c
    query = select(
        group.opd_id, group.paid_until, group.first_month, group.paid_after_gap, group.sponsorships
    ).where(group.status.in_(_DUES_BEARING), group.sponsorships > 0)
    if opd_id is not None:
        query = query.where(group.opd_id == opd_id)
    counts: dict[int, dict[PaidStanding, int]] = {}
    by_next: dict[date, PaidStanding] = {}
    gaps = False
    for row_opd, until, first_month, after_gap, count in await connection.execute(query):
        opd = counts.get(row_opd)
        if opd is None:
            opd = counts[row_opd] = dict.fromkeys(PaidStanding, 0)
        if after_gap:
            gaps = True
            continue
        paid_until = None if until == NO_PAID_MONTH else until
        next_month = PaidRun(paid_until, after_gap=False).next_month(first_month)
        standing = by_next.get(next_month)
        if standing is None:
            standing = by_next[next_month] = run_standing(
                next_month, today=today, calendar=calendar
            )
        opd[standing] += count
    if gaps:
        irregular = (
            await connection.execute(
                select(Sponsorship.id, Sponsorship.opd_id, Sponsorship.first_month).where(
                    dues_bearing,
                    Sponsorship.paid_after_gap.is_(True),
                    *(() if opd_id is None else (Sponsorship.opd_id == opd_id,)),
                )
            )
        ).all()
        paid: dict[int, set[date]] = {}
        for start in range(0, len(irregular), payments.CHUNK):
            part = irregular[start : start + payments.CHUNK]
            paid.update(await payments.paid_months(connection, [row[0] for row in part]))
        for sponsorship_id, row_opd, first_month in irregular:
            standing = paid_standing(
                first_month=first_month,
                paid_months=paid[sponsorship_id],
                today=today,
                calendar=calendar,
            )
            counts[row_opd][standing] += 1
    return counts


async def coverage(
    connection: AsyncConnection, *, today: date, calendar: WorkCalendar
) -> list[CoverageRow]:
    """Every active OPD (zeros included), by code; an inactive OPD only when it has figures.

    `today` (local date) and `calendar` (due dates) place the paid-until distribution.
    """
    rows = await _opd_rows(
        connection, opd_id=None, today=today, calendar=calendar, targets=CoverageTargets()
    )
    return [
        CoverageRow(
            opd_code=row.opd_code,
            opd_name=row.opd_name,
            asn_registered=row.asn_registered,
            asn_sponsoring=row.asn_sponsoring,
            by_status=row.by_status,
            paid=row.paid,
        )
        for row in rows
    ]


def coverage_total(rows: Iterable[CoverageRow], *, name: str = "All OPDs") -> CoverageRow:
    """The sum of `rows`, labelled TOTAL (for the report's last line)."""
    totals = list(rows)
    return CoverageRow(
        opd_code=TOTAL_CODE,
        opd_name=name,
        asn_registered=sum(row.asn_registered for row in totals),
        asn_sponsoring=sum(row.asn_sponsoring for row in totals),
        by_status={
            status: sum(row.by_status[status] for row in totals) for status in SponsorshipStatus
        },
        paid={standing: sum(row.paid[standing] for row in totals) for standing in PaidStanding},
    )


# --- the coverage dashboard (issue 13, page 1) ---------------------------------------------

#: Statuses whose worker holds a card BPJS issued (a KPJ was imported): the protected
#: workers. Coverage targets count these (`CoverageTargets`).
CARD_STATUSES: tuple[SponsorshipStatus, ...] = (
    SponsorshipStatus.ACTIVE,
    SponsorshipStatus.CARD_HANDED_OVER,
)
#: Standings with nothing overdue: the "paid-up" share's numerator.
PAID_UP: tuple[PaidStanding, ...] = (PaidStanding.PAID_AHEAD, PaidStanding.UP_TO_DATE)

#: The code of the overall line in a targets file.
TARGET_TOTAL_CODE = TOTAL_CODE


class TargetsFileError(ValueError):
    """A coverage targets file that cannot be read (message names the line)."""


@dataclasses.dataclass(frozen=True, slots=True)
class CoverageTargets:
    """How many protected workers (`CARD_STATUSES`) the program aims at: overall and per OPD.

    `per_opd` is keyed by OPD code; an OPD without a line has no target of its own
    (None). Loaded from the data file `coverage_targets.csv` (`load_targets`).
    """

    overall: int | None = None
    per_opd: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def for_opd(self, code: str) -> int | None:
        return self.per_opd.get(code)


def load_targets(path: Path) -> CoverageTargets:
    """The targets in CSV file `path`: header `opd_code,target_workers`, one line per
    OPD code and one line `TOTAL` for the overall target (both optional).

    Raises TargetsFileError for a missing file, a bad header, a repeated code or a
    target that is not a whole number >= 0.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise TargetsFileError(f"cannot read {path}: {error.strerror}") from error
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or [cell.strip().lower() for cell in header[:2]] != [
        "opd_code",
        "target_workers",
    ]:
        raise TargetsFileError(f"{path}: the first line must be opd_code,target_workers")
    overall: int | None = None
    per_opd: dict[str, int] = {}
    for number, cells in enumerate(reader, start=2):
        if not cells or not any(cell.strip() for cell in cells):
            continue
        if len(cells) < 2:
            raise TargetsFileError(f"{path} line {number}: expected opd_code,target_workers")
        code, value = cells[0].strip(), cells[1].strip().replace("_", "")
        if not code:
            raise TargetsFileError(f"{path} line {number}: empty opd_code")
        if not value.isdigit():
            raise TargetsFileError(f"{path} line {number}: {value!r} is not a whole number")
        target = int(value)
        if code.upper() == TARGET_TOTAL_CODE:
            if overall is not None:
                raise TargetsFileError(f"{path} line {number}: a second {TARGET_TOTAL_CODE}")
            overall = target
            continue
        if code in per_opd:
            raise TargetsFileError(f"{path} line {number}: {code} appears twice")
        per_opd[code] = target
    return CoverageTargets(overall=overall, per_opd=per_opd)


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """Protected workers reached against a target (None: no target set)."""

    reached: int
    target: int | None

    @property
    def share(self) -> float | None:
        """reached / target (may exceed 1); None without a positive target."""
        if not self.target:
            return None
        return self.reached / self.target


@dataclasses.dataclass(frozen=True, slots=True)
class Tiles:
    """The dashboard's headline numbers for its scope (one OPD or the province).

    `workers_by_status` counts workers per status of their sponsorship (every
    status a key; a worker ended in one OPD and enrolled again counts in both
    statuses); `active_cards` the sponsorships in `CARD_STATUSES`; `dues_bearing`
    and `paid_up` the same sponsorships, and those of them with nothing overdue.
    """

    asn_registered: int
    asn_sponsoring: int
    workers_by_status: dict[SponsorshipStatus, int]
    active_cards: int
    dues_bearing: int
    paid_up: int

    @property
    def paid_up_share(self) -> float | None:
        return self.paid_up / self.dues_bearing if self.dues_bearing else None

    @property
    def workers(self) -> int:
        return sum(self.workers_by_status.values())


@dataclasses.dataclass(frozen=True, slots=True)
class WeekPoint:
    """One week (Monday to Sunday, local time): sponsorships enrolled (created), cards
    issued (KPJ imported) and sponsorships lapsed in it."""

    week_start: date
    enrollments: int
    cards: int
    lapses: int


@dataclasses.dataclass(frozen=True, slots=True)
class OpdRow:
    """One OPD's line of the dashboard table (`CoverageRow` plus target and derived columns)."""

    opd_id: int
    opd_code: str
    opd_name: str
    asn_registered: int
    asn_sponsoring: int
    by_status: dict[SponsorshipStatus, int]
    paid: dict[PaidStanding, int]
    target: int | None

    @property
    def workers(self) -> int:
        return sum(self.by_status.values())

    @property
    def active_cards(self) -> int:
        return sum(self.by_status[status] for status in CARD_STATUSES)

    @property
    def dues_bearing(self) -> int:
        return sum(self.paid.values())

    @property
    def paid_up(self) -> int:
        return sum(self.paid[standing] for standing in PAID_UP)

    @property
    def paid_up_share(self) -> float | None:
        return self.paid_up / self.dues_bearing if self.dues_bearing else None

    @property
    def progress(self) -> Progress:
        return Progress(reached=self.active_cards, target=self.target)


@dataclasses.dataclass(frozen=True, slots=True)
class AreaRow:
    """Workers of one village (in its district and regency) by sponsorship status.

    Erased workers (PRODUCT 7) have no address any more: they are one row with
    `erased` True and empty names (their sponsorships are ENDED).
    """

    regency: str
    district: str
    village: str
    by_status: dict[SponsorshipStatus, int]
    erased: bool = False

    @property
    def workers(self) -> int:
        return sum(self.by_status.values())

    @property
    def active_cards(self) -> int:
        return sum(self.by_status[status] for status in CARD_STATUSES)


@dataclasses.dataclass(frozen=True, slots=True)
class CoverageDashboard:
    """Everything the coverage page shows for one scope, as of `today`.

    `opd_id` None is the province (every OPD); `opds` then holds every OPD row
    `coverage` would show, else only that OPD's. `progress` is the scope's
    protected workers against the overall target (province) or the OPD's.
    `weeks` runs oldest first and ends with the week holding `today`. `paid`
    is the paid-until distribution of the scope's dues-bearing sponsorships.
    `computed_at` says how old the figures are when they come from `CoverageCache`.
    """

    today: date
    opd_id: int | None
    scope_name: str | None
    tiles: Tiles
    progress: Progress
    weeks: tuple[WeekPoint, ...]
    paid: dict[PaidStanding, int]
    opds: tuple[OpdRow, ...]
    areas: tuple[AreaRow, ...]
    #: When the figures were read (set by `CoverageCache`; None: read just now, uncached).
    computed_at: datetime | None = None


class OpdSort(StrEnum):
    """The columns the OPD table sorts by (`sort_opds`); values are safe in a query string."""

    CODE = "code"
    NAME = "name"
    ASN_REGISTERED = "asn_registered"
    ASN_SPONSORING = "asn_sponsoring"
    WORKERS = "workers"
    WAITING = "waiting"
    ACTIVE_CARDS = "active_cards"
    LAPSED = "lapsed"
    ENDED = "ended"
    PAID_UP_SHARE = "paid_up_share"
    TARGET = "target"
    PROGRESS = "progress"


def _none_last(value: float | int | None) -> tuple[bool, float]:
    return (value is None, 0.0 if value is None else float(value))


_OPD_KEYS: dict[OpdSort, Callable[[OpdRow], Any]] = {
    OpdSort.CODE: lambda row: row.opd_code,
    OpdSort.NAME: lambda row: row.opd_name.casefold(),
    OpdSort.ASN_REGISTERED: lambda row: row.asn_registered,
    OpdSort.ASN_SPONSORING: lambda row: row.asn_sponsoring,
    OpdSort.WORKERS: lambda row: row.workers,
    OpdSort.WAITING: lambda row: row.by_status[SponsorshipStatus.WAITING_FOR_PIC],
    OpdSort.ACTIVE_CARDS: lambda row: row.active_cards,
    OpdSort.LAPSED: lambda row: row.by_status[SponsorshipStatus.LAPSED],
    OpdSort.ENDED: lambda row: row.by_status[SponsorshipStatus.ENDED],
    OpdSort.PAID_UP_SHARE: lambda row: row.paid_up_share,
    OpdSort.TARGET: lambda row: row.target,
    OpdSort.PROGRESS: lambda row: row.progress.share,
}


def sort_opds(
    rows: Iterable[OpdRow], key: OpdSort = OpdSort.CODE, *, descending: bool = False
) -> list[OpdRow]:
    """`rows` ordered by column `key` (ties by OPD code); rows without a value (no target,
    nothing dues-bearing) come last in either direction."""
    pick = _OPD_KEYS[key]
    ordered = sorted(rows, key=lambda row: row.opd_code)
    present = [row for row in ordered if pick(row) is not None]
    missing = [row for row in ordered if pick(row) is None]
    present.sort(key=pick, reverse=descending)
    return present + missing


class AreaSort(StrEnum):
    """The columns the area table sorts by (`sort_areas`)."""

    PLACE = "place"
    WORKERS = "workers"
    ACTIVE_CARDS = "active_cards"
    LAPSED = "lapsed"


_AREA_KEYS: dict[AreaSort, Callable[[AreaRow], Any]] = {
    AreaSort.PLACE: lambda row: (
        row.erased,
        row.regency.casefold(),
        row.district.casefold(),
        row.village.casefold(),
    ),
    AreaSort.WORKERS: lambda row: row.workers,
    AreaSort.ACTIVE_CARDS: lambda row: row.active_cards,
    AreaSort.LAPSED: lambda row: row.by_status[SponsorshipStatus.LAPSED],
}


def sort_areas(
    rows: Iterable[AreaRow], key: AreaSort = AreaSort.PLACE, *, descending: bool = False
) -> list[AreaRow]:
    """`rows` ordered by column `key` (ties by place)."""
    ordered = sorted(rows, key=_AREA_KEYS[AreaSort.PLACE])
    ordered.sort(key=_AREA_KEYS[key], reverse=descending)
    return ordered


def by_district(rows: Iterable[AreaRow]) -> list[AreaRow]:
    """The village rows summed per (regency, district), villages left empty; by place."""
    sums: dict[tuple[bool, str, str], dict[SponsorshipStatus, int]] = {}
    for row in rows:
        counts = sums.setdefault(
            (row.erased, row.regency, row.district), dict.fromkeys(SponsorshipStatus, 0)
        )
        for status, count in row.by_status.items():
            counts[status] += count
    return sort_areas(
        AreaRow(regency=regency, district=district, village="", by_status=counts, erased=erased)
        for (erased, regency, district), counts in sums.items()
    )


def week_start(day: date) -> date:
    """The Monday of `day`'s week."""
    return day - timedelta(days=day.weekday())


async def _weekly(
    connection: AsyncConnection,
    *,
    opd_id: int | None,
    today: date,
    weeks: int,
    zone: tzinfo,
) -> tuple[WeekPoint, ...]:
    first = week_start(today) - timedelta(weeks=weeks - 1)
    starts = [first + timedelta(weeks=number) for number in range(weeks)]
    # Local midnights as UTC instants: week i is [bounds[i], bounds[i + 1]).
    bounds = [
        datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
        for day in [*starts, starts[-1] + timedelta(weeks=1)]
    ]
    series = (
        (Sponsorship.created_at, None),
        (Sponsorship.kpj_imported_at, None),
        (Sponsorship.status_changed_at, Sponsorship.status == SponsorshipStatus.LAPSED),
    )
    # One count per series and week, each a range of that series' index: no expression
    # per row and no sort (a CASE giving each row its week, grouped, read every row of
    # the span, 40-90 ms at 144,000 sponsorships on the loaded bench machine).
    ranges = []
    for column, condition in series:
        for start, end in itertools.pairwise(bounds):
            count = select(func.count()).where(column >= start, column < end)
            if condition is not None:
                count = count.where(condition)
            if opd_id is not None:
                count = count.where(Sponsorship.opd_id == opd_id)
            ranges.append(count.scalar_subquery())
    figures = [int(value) for value in (await connection.execute(select(*ranges))).one()]
    counts = [figures[week :: len(starts)] for week in range(len(starts))]
    return tuple(
        WeekPoint(week_start=start, enrollments=values[0], cards=values[1], lapses=values[2])
        for start, values in zip(starts, counts, strict=True)
    )


async def areas_afresh(connection: AsyncConnection, *, opd_id: int | None) -> tuple[AreaRow, ...]:
    """The villages table from the sponsorships joined with their workers (one OPD's, or
    the province's with `opd_id` None), by place: what `coverage_area` holds for the
    province, computed afresh. One OPD's page reads this (its own rows)."""
    erased = Worker.erased_at.is_not(None)
    place = (erased, Worker.regency, Worker.district, Worker.village, Sponsorship.status)
    # As in `_worker_counts`: an open sponsorship is its worker's only open one, so only
    # the lapsed and ended rows need DISTINCT (about half the time of DISTINCT over all).
    parts = []
    for closed, workers in (
        (False, func.count()),
        (True, func.count(distinct(Sponsorship.worker_id))),
    ):
        part = (
            select(*place, workers)
            .join(Worker, Worker.id == Sponsorship.worker_id)
            .where(_IS_CLOSED if closed else SPONSORSHIP_IS_OPEN)
            .group_by(*place)
        )
        if opd_id is not None:
            part = part.where(Sponsorship.opd_id == opd_id)
        parts.append(part)
    return _area_rows(await connection.execute(union_all(*parts)))


async def areas_counted(connection: AsyncConnection) -> tuple[AreaRow, ...]:
    """The province's villages table read from `coverage_area` (kept by triggers; about
    11,600 rows for 144,000 sponsorships over 1,447 villages): equal to
    `areas_afresh(opd_id=None)` at every commit.

    One row per place with a column per status, summed in the table's key order (no
    sort): an eighth of the rows to turn into Python objects."""
    counted = CoverageArea.__table__.c
    place = (counted.erased, counted.regency, counted.district, counted.village)
    query = (
        select(
            *place,
            *(
                func.sum(case((counted.status == status.value, counted.workers), else_=0))
                for status in SponsorshipStatus
            ),
        )
        .where(counted.workers > 0)
        .group_by(*place)
    )
    places: dict[tuple[bool, str, str, str], dict[SponsorshipStatus, int]] = {}
    for is_erased, regency, district, village, *counts in await connection.execute(query):
        by_status = dict(zip(SponsorshipStatus, map(int, counts), strict=True))
        places[(bool(is_erased), regency, district, village)] = by_status
    return _sorted_areas(places)


def _area_rows(
    rows: Result[tuple[bool, str | None, str, str, SponsorshipStatus, int]],
) -> tuple[AreaRow, ...]:
    places: dict[tuple[bool, str, str, str], dict[SponsorshipStatus, int]] = {}
    for is_erased, regency, district, village, status, count in rows:
        # An erased worker's address is gone (placeholders): all of them are one row.
        key = (True, "", "", "") if is_erased else (False, regency or "", district, village)
        counts = places.setdefault(key, dict.fromkeys(SponsorshipStatus, 0))
        counts[SponsorshipStatus(status)] += count
    return _sorted_areas(places)


def _sorted_areas(
    places: Mapping[tuple[bool, str, str, str], dict[SponsorshipStatus, int]],
) -> tuple[AreaRow, ...]:
    return tuple(
        sort_areas(
            AreaRow(
                regency=regency,
                district=district,
                village=village,
                by_status=counts,
                erased=is_erased,
            )
            for (is_erased, regency, district, village), counts in places.items()
        )
    )


async def _opd_rows(
    connection: AsyncConnection,
    *,
    opd_id: int | None,
    today: date,
    calendar: WorkCalendar,
    targets: CoverageTargets,
) -> list[OpdRow]:
    """The OPD table, by code: one OPD's row, or every active OPD (zeros included) and
    an inactive one only when it has figures. Three statements and the dues' reads."""
    asn_counts = {
        row_opd: (registered, sponsoring)
        for row_opd, registered, sponsoring in await connection.execute(_asn_counts(opd_id))
    }
    workers: dict[int, dict[SponsorshipStatus, int]] = {}
    for row_opd, status, count in await connection.execute(_worker_counts(opd_id)):
        workers.setdefault(row_opd, {})[SponsorshipStatus(status)] = count
    standings = await paid_standings(connection, today=today, calendar=calendar, opd_id=opd_id)
    opd_query = select(Opd.id, Opd.code, Opd.name, Opd.active).order_by(Opd.code)
    if opd_id is not None:
        opd_query = opd_query.where(Opd.id == opd_id)
    rows: list[OpdRow] = []
    for row_opd, code, name, active in await connection.execute(opd_query):
        if opd_id is None and not active and row_opd not in asn_counts and row_opd not in workers:
            continue
        registered, sponsoring = asn_counts.get(row_opd, (0, 0))
        statuses = workers.get(row_opd, {})
        rows.append(
            OpdRow(
                opd_id=row_opd,
                opd_code=code,
                opd_name=name,
                asn_registered=registered,
                asn_sponsoring=sponsoring,
                by_status={status: statuses.get(status, 0) for status in SponsorshipStatus},
                paid=dict(standings.get(row_opd) or dict.fromkeys(PaidStanding, 0)),
                target=targets.for_opd(code),
            )
        )
    return rows


async def dashboard(
    connection: AsyncConnection,
    *,
    opd_id: int | None,
    today: date,
    targets: CoverageTargets,
    calendar: WorkCalendar,
    zone: tzinfo,
    weeks: int = 12,
) -> CoverageDashboard:
    """The coverage page's data for one OPD (`opd_id`) or the province (None).

    `today` is the local date (`zone`: the province's time zone, which places
    the week boundaries); `calendar` places dues' due dates. A fixed number of
    set-based statements whatever the number of OPDs, workers or villages.
    An unknown `opd_id` gives an empty dashboard with `scope_name` None.
    """
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    rows = await _opd_rows(
        connection, opd_id=opd_id, today=today, calendar=calendar, targets=targets
    )
    scope_name = rows[0].opd_name if opd_id is not None and rows else None
    by_status = {status: sum(row.by_status[status] for row in rows) for status in SponsorshipStatus}
    paid = {standing: sum(row.paid[standing] for row in rows) for standing in PaidStanding}
    tiles = Tiles(
        asn_registered=sum(row.asn_registered for row in rows),
        asn_sponsoring=sum(row.asn_sponsoring for row in rows),
        workers_by_status=by_status,
        active_cards=sum(by_status[status] for status in CARD_STATUSES),
        dues_bearing=sum(paid.values()),
        paid_up=sum(paid[standing] for standing in PAID_UP),
    )
    own = rows[0].target if rows else None
    target = targets.overall if opd_id is None else own
    return CoverageDashboard(
        today=today,
        opd_id=opd_id,
        scope_name=scope_name,
        tiles=tiles,
        progress=Progress(reached=tiles.active_cards, target=target),
        weeks=await _weekly(connection, opd_id=opd_id, today=today, weeks=weeks, zone=zone),
        paid=paid,
        opds=tuple(rows),
        areas=(
            await areas_counted(connection)
            if opd_id is None
            else await areas_afresh(connection, opd_id=opd_id)
        ),
    )
