"""The coverage report per OPD (PRODUCT 6): ASN registered, ASN sponsoring, workers by
status, and the paid-until distribution of the dues-bearing sponsorships.

Three GROUP BY queries for the whole province, whatever the number of OPDs,
and the reminder planner's two set-based reads of the dues (`dues_queries`):
the paid-until standing is derived from the confirmed payments (never stored),
once per distinct (first month, paid months), as thousands share one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import date

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.dues import PaidStanding, paid_standing
from domain.vocabulary import SponsorshipStatus
from domain.workdays import WorkCalendar
from storage import dues_queries
from storage.models import SPONSORSHIP_IS_OPEN, Asn, Opd, Sponsorship

TOTAL_CODE = "TOTAL"


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


# One row per (ASN, open sponsorship) after the join: both counts are distinct.
_ASN_COUNTS = (
    select(
        Asn.opd_id,
        func.count(distinct(Asn.id)),
        func.count(distinct(Sponsorship.asn_id)),
    )
    .outerjoin(
        Sponsorship,
        (Sponsorship.asn_id == Asn.id) & SPONSORSHIP_IS_OPEN,
    )
    .group_by(Asn.opd_id)
)
_WORKER_COUNTS = select(
    Sponsorship.opd_id, Sponsorship.status, func.count(distinct(Sponsorship.worker_id))
).group_by(Sponsorship.opd_id, Sponsorship.status)


async def paid_standings(
    connection: AsyncConnection, *, today: date, calendar: WorkCalendar
) -> dict[int, dict[PaidStanding, int]]:
    """Per OPD id, its dues-bearing sponsorships counted by `PaidStanding` as of `today`."""
    terms = await dues_queries.dues_terms(connection)
    paid = await dues_queries.confirmed_months(connection)
    shared: dict[tuple[str, tuple[int, int] | None], PaidStanding] = {}
    counts: dict[int, dict[PaidStanding, int]] = {}
    for values in terms:
        sponsorship_id, opd_id, first_month = values[0], values[1], values[3]
        run = paid.runs.get(sponsorship_id)
        standing = None if sponsorship_id in paid.exact else shared.get((first_month, run))
        if standing is None:
            standing = paid_standing(
                first_month=dues_queries.terms_of(values).first_month,
                paid_months=paid.months(sponsorship_id),
                today=today,
                calendar=calendar,
            )
            if sponsorship_id not in paid.exact:
                shared[(first_month, run)] = standing
        opd = counts.get(opd_id)
        if opd is None:
            opd = counts[opd_id] = dict.fromkeys(PaidStanding, 0)
        opd[standing] += 1
    return counts


async def coverage(
    connection: AsyncConnection, *, today: date, calendar: WorkCalendar
) -> list[CoverageRow]:
    """Every active OPD (zeros included), by code; an inactive OPD only when it has figures.

    `today` (local date) and `calendar` (due dates) place the paid-until distribution.
    """
    asn_counts = {
        opd_id: (registered, sponsoring)
        for opd_id, registered, sponsoring in await connection.execute(_ASN_COUNTS)
    }
    workers: dict[int, dict[SponsorshipStatus, int]] = {}
    for opd_id, status, count in await connection.execute(_WORKER_COUNTS):
        workers.setdefault(opd_id, {})[SponsorshipStatus(status)] = count
    standings = await paid_standings(connection, today=today, calendar=calendar)
    opds = await connection.execute(
        select(Opd.id, Opd.code, Opd.name, Opd.active).order_by(Opd.code)
    )
    rows: list[CoverageRow] = []
    for opd_id, code, name, active in opds:
        if not active and opd_id not in asn_counts and opd_id not in workers:
            continue
        registered, sponsoring = asn_counts.get(opd_id, (0, 0))
        statuses = workers.get(opd_id, {})
        rows.append(
            CoverageRow(
                opd_code=code,
                opd_name=name,
                asn_registered=registered,
                asn_sponsoring=sponsoring,
                by_status={status: statuses.get(status, 0) for status in SponsorshipStatus},
                paid=standings.get(opd_id) or dict.fromkeys(PaidStanding, 0),
            )
        )
    return rows


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
