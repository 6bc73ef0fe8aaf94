"""Payments of dues (PRODUCT 4.4): recorded by the payer, confirmed or rejected by the PIC.

Paid-until, next due and arrears are derived from the confirmed payments by
`domain.dues`, never typed. The one copy kept for reading (`sponsorship.paid_until`,
the coverage page's) is settled here, in the transaction of every change to the
confirmed payments (`storage.paid_until`). Functions take the caller's transaction
and never commit; PIC actions are scoped by the PIC's OPD and audited.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from domain.dues import DuesStatus, dues_status
from domain.months import add_months
from domain.tariff import TariffTable
from domain.vocabulary import Channel, PaymentPlan, PaymentStatus, SponsorshipStatus
from domain.workdays import WorkCalendar
from storage import audit
from storage.audit import Actor
from storage.models import Asn, ChannelAccount, Payment, Sponsorship, Worker
from storage.paid_until import settle_paid_until
from storage.workbench import ChangeProblem

#: Sponsorship ids per IN list (well under SQLite's bound-parameter limit).
CHUNK = 2000

#: Statuses in which a sponsorship bears dues.
DUES_BEARING = (SponsorshipStatus.ACTIVE, SponsorshipStatus.CARD_HANDED_OVER)


def months_of(first_month: date, months: int) -> list[date]:
    return [add_months(first_month, offset) for offset in range(months)]


async def _months_by_status(
    connection: AsyncConnection, sponsorship_ids: Iterable[int], status: PaymentStatus
) -> dict[int, set[date]]:
    ids = list(sponsorship_ids)
    found: dict[int, set[date]] = {sid: set() for sid in ids}
    if not ids:
        return found
    rows = await connection.execute(
        select(Payment.sponsorship_id, Payment.first_month, Payment.months).where(
            Payment.sponsorship_id.in_(ids), Payment.status == status
        )
    )
    for sid, first, count in rows:
        found[sid].update(months_of(first, count))
    return found


async def paid_months(
    connection: AsyncConnection, sponsorship_ids: Iterable[int]
) -> dict[int, set[date]]:
    """Confirmed months per sponsorship (every id asked for has an entry)."""
    return await _months_by_status(connection, sponsorship_ids, PaymentStatus.CONFIRMED)


async def waiting_months(
    connection: AsyncConnection, sponsorship_ids: Iterable[int]
) -> dict[int, set[date]]:
    """Months of payments recorded and still waiting for the PIC, per sponsorship
    (every id asked for has an entry)."""
    return await _months_by_status(connection, sponsorship_ids, PaymentStatus.RECORDED)


async def lock_sponsorships(connection: AsyncConnection, sponsorship_ids: Iterable[int]) -> None:
    """Lock the sponsorships' rows until the transaction ends (PostgreSQL `FOR UPDATE`), so a
    payment checked against their payments cannot race another one recorded at the same
    time. SQLite needs nothing: `BEGIN IMMEDIATE` already serialises writers."""
    ids = sorted(set(sponsorship_ids))
    if ids and connection.dialect.name != "sqlite":
        await connection.execute(
            select(Sponsorship.id).where(Sponsorship.id.in_(ids)).with_for_update()
        )


async def record(
    connection: AsyncConnection,
    *,
    sponsorship_id: int,
    first_month: date,
    months: int,
    amount: int,
    receipt_file_ref: str | None,
    account_id: int,
    now: datetime,
) -> int:
    """The payer's record of a payment, waiting for the PIC's confirmation."""
    result = await connection.execute(
        insert(Payment).values(
            sponsorship_id=sponsorship_id,
            first_month=first_month,
            months=months,
            amount=amount,
            status=PaymentStatus.RECORDED,
            receipt_file_ref=receipt_file_ref,
            recorded_by_account_id=account_id,
            recorded_at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


@dataclasses.dataclass(slots=True, frozen=True)
class PaymentLine:
    """One sponsorship's part of a payment the ASN records for one or several workers."""

    sponsorship_id: int
    first_month: date
    months: int
    amount: int


async def record_lot(
    connection: AsyncConnection,
    lines: Sequence[PaymentLine],
    *,
    receipt_file_ref: str | None,
    account_id: int,
    now: datetime,
) -> list[int]:
    """The ASN's payment for one or several sponsorships: one recorded payment per line,
    all with the same receipt and time, each with its audit entry; returns their ids.

    The caller checks the lines first (`domain.dues.check_payment`, months waiting)
    and cancels their reminders in the same transaction.
    """
    rows = await connection.execute(
        select(Sponsorship.id, Sponsorship.opd_id).where(
            Sponsorship.id.in_([line.sponsorship_id for line in lines])
        )
    )
    opds = {sid: opd_id for sid, opd_id in rows}
    ids = []
    for line in lines:
        payment_id = await record(
            connection,
            sponsorship_id=line.sponsorship_id,
            first_month=line.first_month,
            months=line.months,
            amount=line.amount,
            receipt_file_ref=receipt_file_ref,
            account_id=account_id,
            now=now,
        )
        await audit.record(
            connection,
            Actor.account("asn", account_id),
            "payment.record",
            record_type="payment",
            record_id=payment_id,
            opd_id=opds[line.sponsorship_id],
            now=now,
            details={
                "sponsorship": line.sponsorship_id,
                "first_month": line.first_month.isoformat(),
                "months": line.months,
                "amount": line.amount,
                "workers_in_payment": len(lines),
            },
        )
        ids.append(payment_id)
    return ids


@dataclasses.dataclass(slots=True, frozen=True)
class PaymentToConfirm:
    id: int
    sponsorship_id: int
    worker_name: str
    sponsor_name: str
    first_month: date
    months: int
    amount: int
    has_receipt: bool
    recorded_at: datetime
    #: Payments recorded together with this one under the same receipt, itself
    #: included (one receipt for N workers); 0 without a receipt.
    receipt_shared_by: int
    #: The receipt's stored reference and the channel of the account that sent it
    #: (a reference is only valid on the platform that issued it); None without one.
    receipt_file_ref: str | None = None
    receipt_channel: Channel | None = None


async def to_confirm(
    connection: AsyncConnection, *, opd_id: int, limit: int = 1, payment_id: int | None = None
) -> tuple[list[PaymentToConfirm], int]:
    """The OPD's recorded payments, oldest first, and how many there are.

    With `payment_id`, only that payment (if it is the OPD's and still waiting): how the web's
    receipt finds its payment wherever it stands in the queue.
    """
    same_lot = aliased(Payment)
    shared_by = (
        select(func.count())
        .where(
            same_lot.receipt_file_ref == Payment.receipt_file_ref,
            same_lot.recorded_by_account_id == Payment.recorded_by_account_id,
            same_lot.recorded_at == Payment.recorded_at,
        )
        .scalar_subquery()
    )
    waiting = and_(Sponsorship.opd_id == opd_id, Payment.status == PaymentStatus.RECORDED)
    if payment_id is not None:
        waiting = and_(waiting, Payment.id == payment_id)
    total = await connection.scalar(
        select(func.count())
        .select_from(Payment)
        .join(Sponsorship, Sponsorship.id == Payment.sponsorship_id)
        .where(waiting)
    )
    rows = await connection.execute(
        select(
            Payment.id,
            Payment.sponsorship_id,
            Worker.full_name,
            Asn.full_name,
            Payment.first_month,
            Payment.months,
            Payment.amount,
            Payment.receipt_file_ref.is_not(None),
            Payment.recorded_at,
            shared_by,
            Payment.receipt_file_ref,
            ChannelAccount.channel,
        )
        .join(Sponsorship, Sponsorship.id == Payment.sponsorship_id)
        .join(Worker, Worker.id == Sponsorship.worker_id)
        .join(Asn, Asn.id == Sponsorship.asn_id)
        .outerjoin(ChannelAccount, ChannelAccount.id == Payment.recorded_by_account_id)
        .where(waiting)
        .order_by(Payment.recorded_at, Payment.id)
        .limit(limit)
    )
    return [PaymentToConfirm(*row) for row in rows], int(total or 0)


async def decide(
    connection: AsyncConnection,
    *,
    opd_id: int,
    payment_id: int,
    pic_id: int,
    confirm: bool,
    reason: str | None,
    now: datetime,
) -> int:
    """Confirm or reject a recorded payment of the OPD; returns its sponsorship id."""
    sponsorship_id = await connection.scalar(
        select(Payment.sponsorship_id)
        .join(Sponsorship, Sponsorship.id == Payment.sponsorship_id)
        .where(Payment.id == payment_id, Sponsorship.opd_id == opd_id)
    )
    if sponsorship_id is None:
        raise ChangeProblem("not_found")
    result = await connection.execute(
        update(Payment)
        .where(Payment.id == payment_id, Payment.status == PaymentStatus.RECORDED)
        .values(
            status=PaymentStatus.CONFIRMED if confirm else PaymentStatus.REJECTED,
            decided_by_pic_id=pic_id,
            decided_at=now,
            reject_reason=None if confirm else reason,
        )
    )
    if not result.rowcount:
        raise ChangeProblem("wrong_status")
    if confirm:
        await settle_paid_until(connection, [sponsorship_id])
    await audit.record(
        connection,
        Actor.pic(pic_id),
        "payment.confirm" if confirm else "payment.reject",
        record_type="payment",
        record_id=payment_id,
        opd_id=opd_id,
        now=now,
    )
    return int(sponsorship_id)


@dataclasses.dataclass(slots=True, frozen=True)
class PayrollLine:
    """One payroll-deduction sponsorship of an OPD for a month: who, and whether it is paid."""

    sponsorship_id: int
    worker_name: str
    sponsor_name: str
    paid: bool


def _payroll_in_force(month: date) -> ColumnElement[bool]:
    """Sponsorships whose plan in force for `month` is payroll deduction
    (`domain.dues.plan_in_force`): a pending change to payroll deduction counts
    from its month on, a change away from it stops there."""
    payroll = PaymentPlan.PAYROLL_DEDUCTION
    no_change_yet = or_(
        Sponsorship.next_plan.is_(None),
        Sponsorship.next_plan_from.is_(None),
        Sponsorship.next_plan_from > month,
    )
    changed_to_payroll = and_(Sponsorship.next_plan == payroll, Sponsorship.next_plan_from <= month)
    return or_(and_(Sponsorship.plan == payroll, no_change_yet), changed_to_payroll)


async def payroll_month(
    connection: AsyncConnection, *, opd_id: int, month: date
) -> list[PayrollLine]:
    """The OPD's dues-bearing sponsorships on payroll deduction for `month` (covering it),
    by worker name, each saying whether `month` is already confirmed paid."""
    rows = (
        await connection.execute(
            select(Sponsorship.id, Worker.full_name, Asn.full_name)
            .join(Worker, Worker.id == Sponsorship.worker_id)
            .join(Asn, Asn.id == Sponsorship.asn_id)
            .where(
                Sponsorship.opd_id == opd_id,
                _payroll_in_force(month),
                Sponsorship.status.in_(DUES_BEARING),
                Sponsorship.first_month <= month,
            )
            .order_by(Worker.full_name, Sponsorship.id)
        )
    ).all()
    covered = await paid_months(connection, [row[0] for row in rows])
    return [PayrollLine(sid, name, sponsor, month in covered[sid]) for sid, name, sponsor in rows]


async def mark_payroll_month(
    connection: AsyncConnection,
    *,
    opd_id: int,
    month: date,
    amount: int,
    pic_id: int,
    now: datetime,
) -> int:
    """The bendahara paid `month` for every payroll sponsorship of the OPD: confirmed payments
    of `amount` (the month's payroll tariff) for those not yet covered (`payroll_month`);
    already confirmed months are left alone. Audited; returns how many were marked.
    """
    todo = [
        line.sponsorship_id
        for line in await payroll_month(connection, opd_id=opd_id, month=month)
        if not line.paid
    ]
    if todo:
        await connection.execute(
            insert(Payment),
            [
                {
                    "sponsorship_id": sid,
                    "first_month": month,
                    "months": 1,
                    "amount": amount,
                    "status": PaymentStatus.CONFIRMED,
                    "recorded_at": now,
                    "decided_by_pic_id": pic_id,
                    "decided_at": now,
                    "payroll": True,
                }
                for sid in todo
            ],
        )
        await settle_paid_until(connection, todo)
    await audit.record(
        connection,
        Actor.pic(pic_id),
        "payment.payroll_month",
        record_type="opd",
        record_id=opd_id,
        opd_id=opd_id,
        now=now,
        details={"month": month.isoformat(), "sponsorships": len(todo), "amount": amount},
    )
    return len(todo)


def _payroll_marks(opd_id: int, month: date, since: datetime) -> ColumnElement[bool]:
    """The payroll payments of `month` of the OPD's sponsorships marked from `since` on."""
    return and_(
        Payment.payroll.is_(True),
        Payment.first_month == month,
        Payment.decided_at >= since,
        Payment.sponsorship_id.in_(select(Sponsorship.id).where(Sponsorship.opd_id == opd_id)),
    )


async def payroll_marked_since(
    connection: AsyncConnection, *, opd_id: int, month: date, since: datetime
) -> int:
    """How many payroll payments of `month` the OPD's PICs marked from `since` on (undoable)."""
    count = await connection.scalar(
        select(func.count()).select_from(Payment).where(_payroll_marks(opd_id, month, since))
    )
    return int(count or 0)


async def undo_payroll_month(
    connection: AsyncConnection,
    *,
    opd_id: int,
    month: date,
    since: datetime,
    pic_id: int,
    now: datetime,
) -> int:
    """Take back the payroll marks of `month` made for the OPD from `since` on (the same local
    day): those payments are deleted, so the month is unpaid again. Audited with the count;
    returns how many went. Payments the ASN recorded are never touched."""
    result = await connection.execute(
        delete(Payment)
        .where(_payroll_marks(opd_id, month, since))
        .returning(Payment.sponsorship_id)
    )
    unpaid = list(result.scalars())
    undone = len(unpaid)
    await settle_paid_until(connection, unpaid)
    await audit.record(
        connection,
        Actor.pic(pic_id),
        "payment.payroll_month_undo",
        record_type="opd",
        record_id=opd_id,
        opd_id=opd_id,
        now=now,
        details={"month": month.isoformat(), "sponsorships": undone},
    )
    return undone


@dataclasses.dataclass(slots=True, frozen=True)
class InArrears:
    sponsorship_id: int
    worker_name: str
    sponsor_name: str
    status: DuesStatus


async def in_arrears(
    connection: AsyncConnection,
    *,
    opd_id: int,
    today: date,
    calendar: WorkCalendar,
    tariff: TariffTable,
) -> list[InArrears]:
    """The OPD's dues-bearing sponsorships with unpaid months past due, most in arrears first."""
    rows = (
        await connection.execute(
            select(
                Sponsorship.id,
                Sponsorship.first_month,
                Sponsorship.plan,
                Sponsorship.funding_source,
                Sponsorship.next_plan,
                Sponsorship.next_plan_from,
                Worker.full_name,
                Asn.full_name,
            )
            .join(Worker, Worker.id == Sponsorship.worker_id)
            .join(Asn, Asn.id == Sponsorship.asn_id)
            .where(Sponsorship.opd_id == opd_id, Sponsorship.status.in_(DUES_BEARING))
        )
    ).all()
    paid = await paid_months(connection, [row[0] for row in rows])
    found = []
    for sid, first, plan, funding, next_plan, next_from, name, sponsor in rows:
        status = dues_status(
            first_month=first,
            plan=plan,
            funding=funding,
            paid_months=paid[sid],
            today=today,
            calendar=calendar,
            tariff=tariff,
            next_plan=next_plan,
            next_plan_from=next_from,
        )
        if status.months_in_arrears:
            found.append(InArrears(sid, name, sponsor, status))
    return sorted(found, key=lambda item: -item.status.months_in_arrears)
