"""The derived paid-until columns of `sponsorship` (issue 13: the coverage page read afresh).

`sponsorship.paid_until` and `sponsorship.paid_after_gap` are the sponsorship's
`domain.dues.PaidRun`: a function of its first month and its confirmed payments,
kept next to them so the coverage page counts the paid-until distribution of
126,000 dues-bearing sponsorships from one grouped read of `sponsorship`
instead of aggregating 900,000 payment rows (storage/coverage.py).

`settle` is their only writer. It runs in the transaction of every change to a
sponsorship's confirmed payments (storage/payments.py: a payment confirmed, a
payroll month marked or taken back), in migration 0014_coverage's backfill, and
wherever payment rows are written without those functions (the coverage bench
after seeding). A rejected payment was never confirmed: nothing to settle.
`first_month` changes only on a resubmitted enrollment, which has no payments.

It works on a synchronous `Connection` (an `AsyncConnection` calls it through
`settle_paid_until`) against lightweight table constructs rather than
`storage.models`, as migration 0014 runs it: keep it to columns 0014 has.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.dues import PaidRun, paid_run
from domain.months import add_months
from domain.vocabulary import PaymentStatus

_sponsorship = sa.table(
    "sponsorship",
    sa.column("id", sa.Integer),
    sa.column("first_month", sa.Date),
    sa.column("paid_until", sa.Date),
    sa.column("paid_after_gap", sa.Boolean),
)
_payment = sa.table(
    "payment",
    sa.column("sponsorship_id", sa.Integer),
    sa.column("first_month", sa.Date),
    sa.column("months", sa.Integer),
    sa.column("status", sa.String),
)

#: Ids per IN list and rows per executemany: well under SQLite's bound-parameter limit.
CHUNK = 2000

_DERIVED = (_sponsorship.c.paid_until, _sponsorship.c.paid_after_gap)

_UPDATE = (
    sa.update(_sponsorship)
    .where(_sponsorship.c.id == sa.bindparam("sid"))
    .values(paid_until=sa.bindparam("until"), paid_after_gap=sa.bindparam("gap"))
)


_PG_UPDATE = sa.text(
    "UPDATE sponsorship SET paid_until = settled.until, paid_after_gap = settled.gap "
    "FROM unnest(CAST(:sids AS integer[]), CAST(:untils AS date[]), CAST(:gaps AS boolean[])) "
    "AS settled (sid, until, gap) WHERE sponsorship.id = settled.sid"
)


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def settle(connection: Connection, sponsorship_ids: Iterable[int] | None = None) -> int:
    """Recompute `paid_until` and `paid_after_gap` of these sponsorships (None: every one)
    from their confirmed payments; returns how many rows changed. No commit: the
    caller's transaction. Unknown ids are ignored.

    Works in pages of `CHUNK` sponsorships (every one: pages of ids in order), so
    memory stays bounded whatever the number of sponsorships and payments.
    """
    if sponsorship_ids is not None:
        return sum(_settle_part(connection, part) for part in _chunks(sorted(set(sponsorship_ids))))
    ids = _sponsorship.c.id
    changed, after = 0, None
    while True:
        page = sa.select(ids).order_by(ids).limit(CHUNK)
        if after is not None:
            page = page.where(ids > after)
        part = connection.scalars(page).all()
        if not part:
            return changed
        changed += _settle_part(connection, part)
        after = part[-1]


def _settle_part(connection: Connection, part: Sequence[int]) -> int:
    sponsorships = _sponsorship.c
    payments = _payment.c
    # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers): two
    # payments of one sponsorship confirmed at once settle one after the other, the
    # second reading the first's payment, never both from their own snapshot.
    rows = connection.execute(
        sa.select(
            sponsorships.id,
            sponsorships.first_month,
            sponsorships.paid_until,
            sponsorships.paid_after_gap,
        )
        .where(sponsorships.id.in_(part))
        .with_for_update()
    ).all()
    paid: dict[int, list[date]] = {}
    for sid, first, months in connection.execute(
        sa.select(payments.sponsorship_id, payments.first_month, payments.months).where(
            payments.status == PaymentStatus.CONFIRMED.value, payments.sponsorship_id.in_(part)
        )
    ):
        paid.setdefault(sid, []).extend(add_months(first, offset) for offset in range(months))
    changes = []
    for sid, first_month, until, gap in rows:
        run = paid_run(first_month, paid.get(sid, ()))
        if run != PaidRun(until, bool(gap)):
            changes.append({"sid": sid, "until": run.paid_until, "gap": run.after_gap})
    if changes and connection.dialect.name == "postgresql":
        # One set-based UPDATE per page, not one statement per row: every UPDATE
        # statement of `sponsorship` runs the coverage counts' statement triggers
        # (migration 0015), so a page pays them once.
        connection.execute(
            _PG_UPDATE,
            {
                "sids": [change["sid"] for change in changes],
                "untils": [change["until"] for change in changes],
                "gaps": [change["gap"] for change in changes],
            },
        )
    elif changes:
        connection.execute(_UPDATE, changes)
    return len(changes)


async def settle_paid_until(
    connection: AsyncConnection, sponsorship_ids: Iterable[int] | None = None
) -> int:
    """`settle` on an async connection, in its transaction."""
    ids = None if sponsorship_ids is None else list(sponsorship_ids)
    return await connection.run_sync(settle, ids)
