"""Payments: recorded by the payer, confirmed or rejected by the PIC of that OPD only."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import PaymentPlan, PaymentStatus, SponsorshipStatus
from storage import payments
from storage.models import ChannelAccount, Payment, Pic, Sponsorship
from storage.workbench import ChangeProblem
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.workbench import Office, activate, build_office

DEC = date(2026, 12, 1)


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    return office


async def pic_ids(office: Office) -> tuple[int, int]:
    async with office.sessionmaker() as session:
        rows = (await session.execute(select(Pic.id, Pic.opd_id).order_by(Pic.id))).all()
    return rows[0][0], rows[0][1]


async def test_record_confirm_and_reject_within_the_pics_opd(office: Office) -> None:
    siti, joko = await office.sponsorships()
    async with office.sessionmaker() as session:
        account = (
            await session.execute(
                select(ChannelAccount.id).where(ChannelAccount.external_id == "1001")
            )
        ).scalar_one()
    assert siti.status is SponsorshipStatus.ACTIVE
    pic_id, opd_id = await pic_ids(office)
    other_opd = await office.opd_id("BKL-DIKBUD")
    async with office.sessionmaker.kw["bind"].begin() as connection:
        quarter = await payments.record(
            connection, sponsorship_id=siti.id, first_month=DEC, months=3, amount=50_400,
            receipt_file_ref="photo-1", account_id=account, now=office.clock(),
        )  # fmt: skip
        month = await payments.record(
            connection, sponsorship_id=joko.id, first_month=DEC, months=1, amount=16_800,
            receipt_file_ref=None, account_id=account, now=office.clock(),
        )  # fmt: skip
        waiting, total = await payments.to_confirm(connection, opd_id=opd_id, limit=5)
        assert total == 2 and [p.id for p in waiting] == [quarter, month]
        assert waiting[0].has_receipt and not waiting[1].has_receipt
        assert (await payments.to_confirm(connection, opd_id=other_opd))[1] == 0
        # One payment by id wherever it is in the queue (the web's receipt); only the OPD's.
        one, _ = await payments.to_confirm(connection, opd_id=opd_id, payment_id=month)
        assert [p.id for p in one] == [month]
        assert (await payments.to_confirm(connection, opd_id=other_opd, payment_id=month))[0] == []
        with pytest.raises(ChangeProblem, match="not_found"):
            await payments.decide(
                connection, opd_id=other_opd, payment_id=quarter, pic_id=pic_id,
                confirm=True, reason=None, now=office.clock(),
            )  # fmt: skip
        assert await payments.decide(
            connection, opd_id=opd_id, payment_id=quarter, pic_id=pic_id,
            confirm=True, reason=None, now=office.clock(),
        ) == siti.id  # fmt: skip
        await payments.decide(
            connection, opd_id=opd_id, payment_id=month, pic_id=pic_id,
            confirm=False, reason="Bukti transfer tidak terbaca", now=office.clock(),
        )  # fmt: skip
        with pytest.raises(ChangeProblem, match="wrong_status"):
            await payments.decide(
                connection, opd_id=opd_id, payment_id=month, pic_id=pic_id,
                confirm=True, reason=None, now=office.clock(),
            )  # fmt: skip
        paid = await payments.paid_months(connection, [siti.id, joko.id])
    assert paid == {siti.id: {DEC, date(2027, 1, 1), date(2027, 2, 1)}, joko.id: set()}
    async with office.sessionmaker() as session:
        rejected = (await session.execute(select(Payment).where(Payment.id == month))).scalar_one()
    assert rejected.status is PaymentStatus.REJECTED
    assert rejected.reject_reason == "Bukti transfer tidak terbaca"


async def test_payroll_month_marks_only_payroll_sponsorships_once(office: Office) -> None:
    pic_id, opd_id = await pic_ids(office)
    ids = [s.id for s in await office.sponsorships()]
    async with office.sessionmaker.kw["bind"].begin() as connection:
        # None of the two is on payroll deduction: nothing to mark.
        assert await payments.mark_payroll_month(
            connection, opd_id=opd_id, month=DEC, amount=16_800, pic_id=pic_id, now=office.clock()
        ) == 0  # fmt: skip
        await connection.execute(update(Sponsorship).values(plan=PaymentPlan.PAYROLL_DEDUCTION))
        for expected in (2, 0):  # the second time every sponsorship is covered already
            assert await payments.mark_payroll_month(
                connection, opd_id=opd_id, month=DEC, amount=16_800, pic_id=pic_id,
                now=office.clock(),
            ) == expected  # fmt: skip
        paid = await payments.paid_months(connection, ids)
    assert all(months == {DEC} for months in paid.values())


async def test_payroll_month_follows_a_pending_plan_change(office: Office) -> None:
    """Regression: a plan change only sets next_plan, so marking by `plan` alone skipped a
    change to payroll (the PIC reminded, the worker never marked paid) and kept marking a
    sponsorship changed away from it."""
    pic_id, opd_id = await pic_ids(office)
    siti, joko = (s.id for s in await office.sponsorships())
    jan, feb = date(2027, 1, 1), date(2027, 2, 1)
    async with office.sessionmaker.kw["bind"].begin() as connection:
        # Siti: monthly, payroll deduction from January. Joko: payroll, monthly from January.
        await connection.execute(
            update(Sponsorship)
            .where(Sponsorship.id == siti)
            .values(next_plan=PaymentPlan.PAYROLL_DEDUCTION, next_plan_from=jan)
        )
        await connection.execute(
            update(Sponsorship)
            .where(Sponsorship.id == joko)
            .values(
                plan=PaymentPlan.PAYROLL_DEDUCTION,
                next_plan=PaymentPlan.MONTHLY,
                next_plan_from=jan,
            )
        )
        for month in (DEC, jan, feb):
            assert await payments.mark_payroll_month(
                connection, opd_id=opd_id, month=month, amount=16_800, pic_id=pic_id,
                now=office.clock(),
            ) == 1  # fmt: skip
        paid = await payments.paid_months(connection, [siti, joko])
    assert paid == {siti: {jan, feb}, joko: {DEC}}


async def test_a_lot_is_one_payment_per_sponsorship_each_audited_one_receipt_for_all(
    office: Office,
) -> None:
    from storage import audit

    siti, joko = await office.sponsorships()
    _, opd_id = await pic_ids(office)
    async with office.sessionmaker() as session:
        account = (
            await session.execute(
                select(ChannelAccount.id).where(ChannelAccount.external_id == "1001")
            )
        ).scalar_one()
    lines = [
        payments.PaymentLine(siti.id, DEC, 3, 50_400),
        payments.PaymentLine(joko.id, DEC, 1, 16_800),
    ]
    async with office.sessionmaker.kw["bind"].begin() as connection:
        ids = await payments.record_lot(
            connection, lines, receipt_file_ref="photo-9", account_id=account, now=office.clock()
        )
        alone = await payments.record(
            connection, sponsorship_id=siti.id, first_month=date(2027, 3, 1), months=1,
            amount=16_800, receipt_file_ref="photo-10", account_id=account, now=office.clock(),
        )  # fmt: skip
        waiting, total = await payments.to_confirm(connection, opd_id=opd_id, limit=5)
        entries = await audit.recent(connection, opd_id=opd_id)
        held = await payments.waiting_months(connection, [siti.id, joko.id])
    assert total == 3
    assert [(p.id, p.receipt_shared_by) for p in waiting] == [(ids[0], 2), (ids[1], 2), (alone, 1)]
    recorded = [e for e in entries if e.action == "payment.record"]
    assert sorted(int(e.record_id or 0) for e in recorded) == sorted(ids)
    assert {(e.actor_type, e.actor) for e in recorded} == {("asn", str(account))}
    assert {e.details["workers_in_payment"] for e in recorded} == {2}
    assert held[joko.id] == {DEC}
    assert held[siti.id] == {DEC, date(2027, 1, 1), date(2027, 2, 1), date(2027, 3, 1)}
