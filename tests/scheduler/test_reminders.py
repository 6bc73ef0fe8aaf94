"""Dues reminders across a year with a frozen clock: the right days, never twice, none after
payment, payroll lines to the PIC, escalation and lapse with both notices once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.months import add_months
from domain.tariff import DEFAULT_TARIFF, FundingSource
from domain.vocabulary import (
    Channel,
    EmploymentType,
    Language,
    Occupation,
    OutboxStatus,
    PaymentPlan,
    PaymentStatus,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from domain.workdays import WorkCalendar
from handlers.i18n import Catalogs
from handlers.where_to_pay import where_to_pay
from scheduler.reminders import DEFAULT_CHUNK_SIZE, PlanResult, ReminderPlanner
from storage import dues_queries
from storage.db import create_engine
from storage.dues_queries import PaidMonths, PlannedNotice, cancel_reminders, params_json
from storage.models import (
    Asn,
    AuditLog,
    ChannelAccount,
    Opd,
    Outbox,
    Payment,
    Pic,
    Sponsorship,
    Worker,
)
from storage.outbox import claim_due
from tests.fakes.clock import FrozenClock
from tests.scheduler.test_planning import outbox_rows

JAKARTA = ZoneInfo("Asia/Jakarta")
#: Independence Day 2026 is a Monday; 15 August is a Saturday, so August dues are due Tue 18th.
HOLIDAYS = (date(2026, 8, 17),)
ASN_CHAT = "1001"
PIC_CHAT = "2001"
START = datetime(2025, 12, 31, 17, 0, tzinfo=UTC)  # 1 January 2026, 00:00 WIB


@dataclasses.dataclass
class World:
    engine: AsyncEngine
    clock: FrozenClock
    opd_id: int
    asn_id: int
    pic_id: int
    _workers: int = 0

    async def sponsorship(
        self,
        plan: PaymentPlan,
        *,
        name: str,
        first_month: date = date(2026, 1, 1),
        status: SponsorshipStatus = SponsorshipStatus.ACTIVE,
        phone: str | None = None,
    ) -> int:
        self._workers += 1
        now = self.clock()
        funding = (
            FundingSource.PAYROLL_DEDUCTION
            if plan is PaymentPlan.PAYROLL_DEDUCTION
            else FundingSource.ASN_PERSONAL
        )
        async with self.engine.begin() as connection:
            worker_id = (
                await connection.execute(
                    insert(Worker)
                    .values(
                        nik_hash=self._workers.to_bytes(32, "big"),
                        nik_ciphertext=b"x",
                        nik_masked="3201********0001",
                        full_name=name,
                        birth_date=date(1980, 1, 1),
                        sex=Sex.FEMALE,
                        phone_e164=phone,
                        village="Desa",
                        district="Kecamatan",
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(Worker.id)
                )
            ).scalar_one()
            return int(
                (
                    await connection.execute(
                        insert(Sponsorship)
                        .values(
                            worker_id=worker_id,
                            asn_id=self.asn_id,
                            opd_id=self.opd_id,
                            occupation=Occupation.DRIVER,
                            plan=plan,
                            first_month=first_month,
                            status=status,
                            worker_consent=WorkerConsent.GIVEN,
                            funding_source=funding,
                            created_at=now,
                            status_changed_at=now,
                        )
                        .returning(Sponsorship.id)
                    )
                ).scalar_one()
            )

    async def pay(
        self,
        sponsorship_id: int,
        first_month: date,
        months: int = 1,
        status: PaymentStatus = PaymentStatus.CONFIRMED,
        recorded: datetime | None = None,
    ) -> None:
        if recorded is None:
            recorded = self.clock() - timedelta(hours=1)
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(Payment).values(
                    sponsorship_id=sponsorship_id,
                    first_month=first_month,
                    months=months,
                    amount=16_800 * months,
                    status=status,
                    recorded_at=recorded,
                    decided_at=recorded if status is PaymentStatus.CONFIRMED else None,
                )
            )

    async def outbox(self, kind: str | None = None) -> list[Outbox]:
        async with self.engine.connect() as connection:
            query = select(Outbox).order_by(Outbox.id)
            if kind is not None:
                query = query.where(Outbox.kind == kind)
            return [Outbox(**row._mapping) for row in await connection.execute(query)]

    async def status(self, sponsorship_id: int) -> SponsorshipStatus:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                select(Sponsorship.status).where(Sponsorship.id == sponsorship_id)
            )
            return result.scalar_one()


async def _account(
    connection: AsyncConnection,
    external_id: str,
    now: datetime,
    language: Language = Language.INDONESIAN,
) -> int:
    result = await connection.execute(
        insert(ChannelAccount)
        .values(
            channel=Channel.TELEGRAM,
            external_id=external_id,
            language=language,
            display_name=None,
            created_at=now,
        )
        .returning(ChannelAccount.id)
    )
    return int(result.scalar_one())


async def _asn(
    connection: AsyncConnection, account_id: int, opd_id: int, name: str, now: datetime
) -> int:
    result = await connection.execute(
        insert(Asn)
        .values(
            nip=f"19800101200604{1000 + account_id}",
            employment_type=EmploymentType.PNS,
            full_name=name,
            birth_date=date(1980, 1, 1),
            sex=Sex.MALE,
            opd_id=opd_id,
            phone_e164=f"+62812345{account_id:05d}",
            channel_account_id=account_id,
            registered_at=now,
        )
        .returning(Asn.id)
    )
    return int(result.scalar_one())


@pytest.fixture
async def world(db_engine: AsyncEngine) -> World:
    clock = FrozenClock(START)
    now = clock()
    async with db_engine.begin() as connection:
        opd_id = (
            await connection.execute(
                insert(Opd)
                .values(
                    code="DINKES",
                    name="Dinas Kesehatan",
                    search_name="dinas kesehatan",
                    active=True,
                    created_at=now,
                )
                .returning(Opd.id)
            )
        ).scalar_one()
        asn_account = await _account(connection, ASN_CHAT, now)
        pic_account = await _account(connection, PIC_CHAT, now)
        asn_id = await _asn(connection, asn_account, opd_id, "Budi Santoso", now)
        pic_id = (
            await connection.execute(
                insert(Pic)
                .values(
                    opd_id=opd_id,
                    channel_account_id=pic_account,
                    appointed_by="test",
                    appointed_at=now,
                )
                .returning(Pic.id)
            )
        ).scalar_one()
    return World(db_engine, clock, opd_id, asn_id, pic_id)


#: Read once: parsing both .po files took 0.15 s, and a year's run builds 730 planners.
CATALOGS = Catalogs()


def planner(
    world: World,
    worker_channel: Channel | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> ReminderPlanner:
    return ReminderPlanner(
        world.engine,
        CATALOGS,
        world.clock,
        timezone=JAKARTA,
        calendar=WorkCalendar(HOLIDAYS),
        tariff=DEFAULT_TARIFF,
        worker_channel=worker_channel,
        chunk_size=chunk_size,
    )


Action = Callable[[], Awaitable[None]]


async def run_year(
    world: World,
    actions: dict[date, list[Action]],
    *,
    until: date = date(2026, 12, 31),
    worker_channel: Channel | None = None,
) -> list[PlanResult]:
    """Every day at 09:00 WIB: the day's actions (payments), then the planner twice."""
    results: list[PlanResult] = []
    day = START.astimezone(JAKARTA).date()
    while day <= until:
        world.clock.now = datetime(day.year, day.month, day.day, 9, tzinfo=JAKARTA).astimezone(UTC)
        for action in actions.get(day, []):
            await action()
        results.append(await planner(world, worker_channel).plan())
        again = await planner(world, worker_channel).plan()
        assert again.notices == 0 and again.lapsed == 0, f"second run on {day} planned {again}"
        day += timedelta(days=1)
    return results


def local_day(row: Outbox) -> date:
    return row.created_at.astimezone(JAKARTA).date()


def monthly_payments(world: World, sponsorship_id: int, months: int) -> dict[date, list[Action]]:
    """Each month paid on its due date (after that morning's reminders were planned)."""
    calendar = WorkCalendar(HOLIDAYS)
    actions: dict[date, list[Action]] = {}
    for offset in range(months):
        month = add_months(date(2026, 1, 1), offset)
        day = calendar.next_working_day(month.replace(day=15))

        async def pay(month: date = month) -> None:
            await world.pay(sponsorship_id, month)

        actions.setdefault(day, []).append(pay)
    return actions


async def test_monthly_payer_reminded_5_and_1_day_before_each_due_date(world: World) -> None:
    sponsorship = await world.sponsorship(PaymentPlan.MONTHLY, name="Siti Aminah")
    await run_year(world, monthly_payments(world, sponsorship, 12))

    rows = await world.outbox()
    assert {row.kind for row in rows} == {"reminder.before5", "reminder.before1"}
    before5 = {row.dedupe_key.split(":")[2]: local_day(row) for row in rows if "5" in row.kind}
    before1 = {row.dedupe_key.split(":")[2]: local_day(row) for row in rows if "1" in row.kind}
    assert len(before5) == len(before1) == 12
    # January: Thu 15th. February: the 15th is a Sunday, due Monday 16th.
    # August: Sat 15th, Mon 17th a holiday, due Tuesday 18th.
    assert before5["2026-01"] == date(2026, 1, 10)
    assert before1["2026-01"] == date(2026, 1, 14)
    assert before5["2026-02"] == date(2026, 2, 11)
    assert before1["2026-02"] == date(2026, 2, 15)
    assert before5["2026-08"] == date(2026, 8, 13)
    assert before1["2026-08"] == date(2026, 8, 17)
    january = next(
        row for row in rows if row.dedupe_key == f"reminder:before5:2026-01:{sponsorship}"
    )
    assert january.recipient == ASN_CHAT
    assert "Siti Aminah" in january.body and "Januari 2026" in january.body
    assert "Rp16.800" in january.body and "15 Januari 2026" in january.body
    # Planned for 08:00 local on the day (the dispatcher keeps quiet hours anyway).
    assert january.not_before == datetime(2026, 1, 10, 8, tzinfo=JAKARTA)
    assert all(row.status is OutboxStatus.PENDING for row in rows)


async def test_the_dispatcher_claims_reminders_from_0800_local(world: World) -> None:
    await world.sponsorship(PaymentPlan.MONTHLY, name="Siti Aminah")
    world.clock.now = datetime(2026, 1, 10, 6, 30, tzinfo=JAKARTA).astimezone(UTC)
    assert (await planner(world).plan()).before5 == 1
    at_0800 = datetime(2026, 1, 10, 8, tzinfo=JAKARTA)
    async with world.engine.begin() as connection:
        early = await claim_due(
            connection, now=at_0800 - timedelta(seconds=1), limit=10, lease=timedelta(minutes=1)
        )
        assert early == []
        (claimed,) = await claim_due(connection, now=at_0800, limit=10, lease=timedelta(minutes=1))
    assert claimed.kind == "reminder.before5" and claimed.recipient == ASN_CHAT
    assert claimed.params["amount"] == "Rp16.800"


async def test_quarterly_payer_reminded_once_a_quarter(world: World) -> None:
    sponsorship = await world.sponsorship(PaymentPlan.QUARTERLY, name="Joko Susilo")
    actions: dict[date, list[Action]] = {}
    for quarter in (date(2026, 1, 1), date(2026, 4, 1), date(2026, 7, 1), date(2026, 10, 1)):

        async def pay(quarter: date = quarter) -> None:
            await world.pay(sponsorship, quarter, months=3)

        actions[quarter.replace(day=13)] = [pay]
    await run_year(world, actions)

    rows = await world.outbox()
    assert sorted(row.dedupe_key for row in rows) == sorted(
        f"reminder:before5:{month}:{sponsorship}"
        for month in ("2026-01", "2026-04", "2026-07", "2026-10")
    )
    assert all("Rp50.400" in row.body for row in rows)


async def test_payroll_dues_remind_the_pic_once_per_opd_not_each_asn(world: World) -> None:
    first = await world.sponsorship(PaymentPlan.PAYROLL_DEDUCTION, name="Ani")
    second = await world.sponsorship(PaymentPlan.PAYROLL_DEDUCTION, name="Bayu")
    actions: dict[date, list[Action]] = {}
    for sponsorship in (first, second):
        for day, pays in monthly_payments(world, sponsorship, 3).items():
            actions.setdefault(day, []).extend(pays)
    await run_year(world, actions, until=date(2026, 3, 31))

    rows = await world.outbox()
    assert all(row.recipient == PIC_CHAT and row.kind == "reminder.payroll" for row in rows)
    # Three months, 5 and 1 day before each: six lines, each counting both participants.
    assert len(rows) == 6
    assert all("2 peserta" in row.body and "Dinas Kesehatan" in row.body for row in rows)
    assert {local_day(row) for row in rows} == {
        date(2026, 1, 10),
        date(2026, 1, 14),
        date(2026, 2, 11),
        date(2026, 2, 15),
        date(2026, 3, 11),
        date(2026, 3, 15),
    }


async def test_a_payroll_line_for_a_past_due_date_says_it_is_overdue(world: World) -> None:
    await world.sponsorship(PaymentPlan.PAYROLL_DEDUCTION, name="Ani")
    await run_year(world, {}, until=date(2026, 1, 20))  # January's dues never marked paid

    rows = await world.outbox()
    before = [row for row in rows if row.kind == "reminder.payroll"]
    (overdue,) = [row for row in rows if row.kind == "reminder.payroll_overdue"]
    assert len(before) == 2 and not any("lewat jatuh tempo" in row.body for row in before)
    assert overdue.recipient == PIC_CHAT
    assert local_day(overdue) == date(2026, 1, 16)  # the day after the 15th
    assert "Januari 2026 untuk 1 peserta sudah lewat jatuh tempo (15 Januari 2026)" in (
        overdue.body
    )


@pytest.mark.parametrize("read_all_payers_from", [10_000, 1], ids=["by-id", "all-at-once"])
async def test_unpaid_months_overdue_escalation_then_lapse_with_both_notices_once(
    world: World, monkeypatch: pytest.MonkeyPatch, read_all_payers_from: int
) -> None:
    # "all-at-once": the path a wave of lapses takes (names read with every
    # dues-bearing row), which must read them before the lapse takes them out.
    monkeypatch.setattr(dues_queries, "_READ_ALL_PAYERS_FROM", read_all_payers_from)
    sponsorship = await world.sponsorship(PaymentPlan.MONTHLY, name="Siti Aminah")
    results = await run_year(world, monthly_payments(world, sponsorship, 3))

    assert await world.status(sponsorship) is SponsorshipStatus.LAPSED
    overdue = await world.outbox("reminder.overdue")
    escalation = await world.outbox("reminder.escalation")
    lapsed_asn = await world.outbox("lapsed.asn")
    lapsed_pic = await world.outbox("lapsed.pic")
    # April (due Wed 15th) unpaid: overdue on the 16th; May (Fri 15th) too: escalation
    # on the 16th; June (Mon 15th): the third month, lapse on the 16th.
    assert [(row.dedupe_key, local_day(row)) for row in overdue] == [
        (f"reminder:overdue:2026-04:{sponsorship}", date(2026, 4, 16))
    ]
    assert [local_day(row) for row in escalation] == [date(2026, 5, 16)]
    assert "2 bulan" in escalation[0].body
    assert [(row.recipient, local_day(row)) for row in lapsed_asn] == [
        (ASN_CHAT, date(2026, 6, 16))
    ]
    assert [(row.recipient, local_day(row)) for row in lapsed_pic] == [
        (PIC_CHAT, date(2026, 6, 16))
    ]
    assert "Budi Santoso" in lapsed_pic[0].body and "Siti Aminah" in lapsed_pic[0].body
    assert sum(result.lapsed for result in results) == 1
    # Nothing at all after the lapse.
    assert max(local_day(row) for row in await world.outbox()) == date(2026, 6, 16)
    async with world.engine.connect() as connection:
        result = await connection.execute(select(AuditLog.action, AuditLog.record_id))
        audit = [tuple(row) for row in result]
    assert audit == [("sponsorship.lapsed", str(sponsorship))]


async def test_the_worker_is_told_of_the_risk_and_the_lapse_on_whatsapp(world: World) -> None:
    sponsorship = await world.sponsorship(
        PaymentPlan.MONTHLY, name="Siti Aminah", phone="+6281298765432"
    )
    unphoned = await world.sponsorship(PaymentPlan.MONTHLY, name="Joko Susilo")
    await run_year(
        world,
        {**monthly_payments(world, sponsorship, 3)},
        until=date(2026, 6, 30),
        worker_channel=Channel.WHATSAPP,
    )
    at_risk = await world.outbox("at_risk.worker")
    lapsed = await world.outbox("lapsed.worker")
    # Only Siti has a phone: Joko's ASN is told, Joko is not.
    assert [(row.recipient, row.channel, local_day(row)) for row in at_risk] == [
        ("6281298765432", Channel.WHATSAPP, date(2026, 5, 16))
    ]
    assert at_risk[0].dedupe_key == f"reminder:escalation_worker:2026-04:{sponsorship}"
    assert at_risk[0].template == "at_risk_worker"
    assert at_risk[0].params == {"name": "Siti Aminah", "months": 2}
    assert "2 bulan belum dibayar" in at_risk[0].body
    assert [(row.recipient, local_day(row)) for row in lapsed] == [
        ("6281298765432", date(2026, 6, 16))
    ]
    assert lapsed[0].template == "lapsed_worker"
    assert "nonaktif" in lapsed[0].body
    assert len(await world.outbox("lapsed.asn")) == 2
    assert await world.status(unphoned) is SponsorshipStatus.LAPSED


async def test_a_payment_recorded_cancels_the_workers_pending_risk_notice(world: World) -> None:
    sponsorship = await world.sponsorship(
        PaymentPlan.MONTHLY, name="Siti Aminah", phone="+6281298765432"
    )
    await run_year(
        world,
        monthly_payments(world, sponsorship, 3),
        until=date(2026, 5, 16),
        worker_channel=Channel.WHATSAPP,
    )
    (at_risk,) = await world.outbox("at_risk.worker")
    assert at_risk.status is OutboxStatus.PENDING
    async with world.engine.begin() as connection:
        removed = await cancel_reminders(connection, sponsorship, [date(2026, 4, 1)])
    # Nothing was sent yet: April's 5-day, 1-day, overdue and escalation reminders to the
    # ASN and the worker's notice all go.
    assert removed == 5
    assert await world.outbox("at_risk.worker") == []


async def test_a_missed_5_day_reminder_is_planned_on_the_next_run_up_to_2_days_before(
    world: World,
) -> None:
    """January is due Thursday the 15th: the 5-day reminder belongs to the 10th."""
    late = await world.sponsorship(PaymentPlan.MONTHLY, name="Ani")

    async def plan_on(day: date) -> PlanResult:
        world.clock.now = datetime(day.year, day.month, day.day, 9, tzinfo=JAKARTA).astimezone(UTC)
        return await planner(world).plan()

    # The scheduler was down from the 9th to the 11th: the 12th plans it (the text
    # names the date), the 13th adds nothing, the 14th brings the 1-day reminder.
    assert (await plan_on(date(2026, 1, 12))).before5 == 1
    assert (await plan_on(date(2026, 1, 13))).notices == 0
    assert (await plan_on(date(2026, 1, 14))).before1 == 1
    before5, before1 = await world.outbox()
    assert (before5.dedupe_key, local_day(before5)) == (
        f"reminder:before5:2026-01:{late}",
        date(2026, 1, 12),
    )
    assert "jatuh tempo 15 Januari 2026" in before5.body
    assert before1.dedupe_key == f"reminder:before1:2026-01:{late}"
    # Down from the 9th to the 14th: on the due day itself nothing (the overdue
    # reminder follows on the 16th when still unpaid).
    other = await world.sponsorship(PaymentPlan.MONTHLY, name="Bayu")
    assert (await plan_on(date(2026, 1, 15))).notices == 0
    assert (await plan_on(date(2026, 1, 16))).overdue == 2
    assert {row.dedupe_key for row in await world.outbox("reminder.overdue")} == {
        f"reminder:overdue:2026-01:{late}",
        f"reminder:overdue:2026-01:{other}",
    }


async def test_confirmed_payment_means_no_overdue_and_recorded_payment_cancels(
    world: World,
) -> None:
    paid_early = await world.sponsorship(PaymentPlan.MONTHLY, name="Ani")
    records_late = await world.sponsorship(PaymentPlan.MONTHLY, name="Bayu")
    await world.pay(paid_early, date(2026, 1, 1))
    await run_year(world, {}, until=date(2026, 1, 12))
    # January paid before any reminder: nothing for it; Bayu got his 5-day reminder.
    assert [row.dedupe_key for row in await world.outbox()] == [
        f"reminder:before5:2026-01:{records_late}"
    ]
    # Bayu records a payment (not yet confirmed) before the dispatcher sent it.
    async with world.engine.begin() as connection:
        assert await cancel_reminders(connection, records_late, [date(2026, 1, 1)]) == 1
        assert await cancel_reminders(connection, records_late, [date(2026, 1, 1)]) == 0
    await world.pay(records_late, date(2026, 1, 1), status=PaymentStatus.RECORDED)
    assert await world.outbox() == []
    # The PIC confirms it on the 14th: no before1, no overdue for January.
    async with world.engine.begin() as connection:
        await connection.execute(
            update(Payment)
            .where(Payment.sponsorship_id == records_late)
            .values(status=PaymentStatus.CONFIRMED)
        )
    await run_year(world, {}, until=date(2026, 1, 31))
    assert await world.outbox() == []


async def test_sent_reminders_are_not_cancelled(world: World) -> None:
    sponsorship = await world.sponsorship(PaymentPlan.MONTHLY, name="Ani")
    await run_year(world, {}, until=date(2026, 1, 10))
    async with world.engine.begin() as connection:
        await connection.execute(update(Outbox).values(status=OutboxStatus.SENT))
        assert await cancel_reminders(connection, sponsorship, [date(2026, 1, 1)]) == 0
    assert len(await world.outbox()) == 1


async def test_only_active_sponsorships_bear_dues(world: World) -> None:
    for status in SponsorshipStatus:
        if status not in (SponsorshipStatus.ACTIVE, SponsorshipStatus.CARD_HANDED_OVER):
            await world.sponsorship(PaymentPlan.MONTHLY, name=f"W {status}", status=status)
    card = await world.sponsorship(
        PaymentPlan.MONTHLY, name="Card", status=SponsorshipStatus.CARD_HANDED_OVER
    )
    await run_year(world, {}, until=date(2026, 1, 10))
    assert [row.dedupe_key for row in await world.outbox()] == [f"reminder:before5:2026-01:{card}"]


async def test_concurrent_planners_plan_each_reminder_once(world: World) -> None:
    for index in range(20):
        await world.sponsorship(PaymentPlan.MONTHLY, name=f"Worker {index}")
    world.clock.now = datetime(2026, 1, 10, 9, tzinfo=JAKARTA).astimezone(UTC)
    results = await asyncio.gather(planner(world).plan(), planner(world).plan())
    assert sorted(result.before5 for result in results) == [0, 20]
    assert len(await world.outbox("reminder.before5")) == 20


async def test_names_are_written_exactly_as_given_in_body_and_params(world: World) -> None:
    # Reminders of one kind and month share their text; only the name differs.
    names = ['Ñoño "Q" \\ {month}', "Siti 😀 Aminah", "Ani\nBaru"]
    ids = [await world.sponsorship(PaymentPlan.MONTHLY, name=name) for name in names]
    # Two months unpaid by 10 January 2026 (November and December 2025): escalation.
    at_risk = await world.sponsorship(
        PaymentPlan.MONTHLY, name="Joko {0}", first_month=date(2025, 11, 1)
    )
    world.clock.now = datetime(2026, 1, 10, 9, tzinfo=JAKARTA).astimezone(UTC)
    result = await planner(world).plan()
    assert (result.before5, result.escalation) == (3, 1)

    t = CATALOGS.translator(Language.INDONESIAN)
    rows = {row.dedupe_key: row for row in await world.outbox()}
    for sponsorship_id, name in zip(ids, names, strict=True):
        row = rows[f"reminder:before5:2026-01:{sponsorship_id}"]
        params = {
            "name": name,
            "month": "Januari 2026",
            "due_date": "15 Januari 2026",
            "amount": "Rp16.800",
        }
        assert row.params == params
        # The text, then where to pay (issue 12 item 10; no channels file here).
        assert row.body == t("reminder.before5", **params) + "\n\n" + where_to_pay(t, ())
    escalation = rows[f"reminder:escalation:2025-11:{at_risk}"]
    assert escalation.params == {"name": "Joko {0}", "months": 2}
    assert escalation.body.startswith(t("reminder.escalation", name="Joko {0}", months=2))


async def test_confirmed_months_read_as_runs_and_irregular_months(world: World) -> None:
    monthly = await world.sponsorship(PaymentPlan.MONTHLY, name="Run")
    quarterly = await world.sponsorship(PaymentPlan.QUARTERLY, name="Quarter")
    gap = await world.sponsorship(PaymentPlan.MONTHLY, name="Gap")
    pending = await world.sponsorship(PaymentPlan.MONTHLY, name="Pending")
    unpaid = await world.sponsorship(PaymentPlan.MONTHLY, name="Unpaid")
    for month in (date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)):
        await world.pay(monthly, month)
    await world.pay(quarterly, date(2026, 1, 1), months=3)
    await world.pay(quarterly, date(2026, 4, 1), months=1)
    await world.pay(gap, date(2025, 12, 1))
    await world.pay(gap, date(2026, 2, 1), months=2)
    await world.pay(pending, date(2026, 1, 1))
    await world.pay(pending, date(2026, 2, 1), status=PaymentStatus.RECORDED)
    await world.pay(pending, date(2026, 3, 1), status=PaymentStatus.REJECTED)

    async with world.engine.connect() as connection:
        paid = await dues_queries.confirmed_months(connection)

    def months(*values: tuple[int, int]) -> frozenset[date]:
        return frozenset(date(year, month, 1) for year, month in values)

    assert paid.months(monthly) == months((2026, 1), (2026, 2), (2026, 3))
    assert paid.months(quarterly) == months((2026, 1), (2026, 2), (2026, 3), (2026, 4))
    assert paid.months(gap) == months((2025, 12), (2026, 2), (2026, 3))
    assert paid.months(pending) == months((2026, 1))
    assert paid.months(unpaid) == frozenset()
    assert gap in paid.exact and monthly in paid.runs and quarterly in paid.runs
    # For the reminders: also what waits for the PIC, never what the PIC rejected.
    async with world.engine.connect() as connection:
        claimed = await dues_queries.confirmed_months(connection, including_recorded=True)
    assert claimed.months(pending) == months((2026, 1), (2026, 2))
    assert pending in claimed.runs
    assert claimed.months(gap) == paid.months(gap)


async def test_a_payment_waiting_for_the_pic_stops_reminders_and_a_rejection_resumes_them(
    world: World,
) -> None:
    waits = await world.sponsorship(PaymentPlan.MONTHLY, name="Ani")
    await run_year(world, {}, until=date(2026, 1, 10))
    assert [row.dedupe_key for row in await world.outbox()] == [f"reminder:before5:2026-01:{waits}"]
    # Recorded on the 11th; the PIC leaves it undecided into March: no 1-day reminder,
    # no overdue, escalation or lapse for the recorded months, while February (not
    # recorded) is reminded as usual.
    await world.pay(waits, date(2026, 1, 1), status=PaymentStatus.RECORDED)
    await world.pay(waits, date(2026, 2, 1), status=PaymentStatus.RECORDED)
    await run_year(world, {}, until=date(2026, 3, 20))
    keys = [row.dedupe_key for row in await world.outbox()]
    assert keys == [
        f"reminder:before5:2026-01:{waits}",
        f"reminder:before5:2026-03:{waits}",
        f"reminder:before1:2026-03:{waits}",
        f"reminder:overdue:2026-03:{waits}",
    ]
    assert await world.status(waits) is SponsorshipStatus.ACTIVE
    # The PIC rejects both: the next morning January to March are three months in
    # arrears, and the sponsorship lapses (ASN and PIC told).
    async with world.engine.begin() as connection:
        await connection.execute(
            update(Payment)
            .where(Payment.sponsorship_id == waits)
            .values(status=PaymentStatus.REJECTED, decided_at=world.clock())
        )
    await run_year(world, {}, until=date(2026, 3, 21))
    assert await world.status(waits) is SponsorshipStatus.LAPSED
    assert len(await world.outbox("lapsed.asn")) == 1


async def test_notices_expected_new_skip_a_key_that_exists(world: World) -> None:
    """A key the caller did not know of (PostgreSQL: the copy fails, the insert skips it)."""
    now = world.clock()

    def notice(key: str, body: str) -> PlannedNotice:
        return PlannedNotice(
            key, Channel.TELEGRAM, ASN_CHAT, "lapsed.asn", body, params_json({"name": body})
        )

    async with world.engine.begin() as connection:
        written = await dues_queries.insert_notices(
            connection, [notice("k:2", "first")], now=now, not_before=now
        )
        assert written == {"k:2"}
    async with world.engine.begin() as connection:
        written = await dues_queries.insert_notices(
            connection,
            (notice(f"k:{index}", "second") for index in range(1, 4)),
            now=now,
            not_before=now,
            expect_new=True,
        )
    assert written == {"k:1", "k:3"}
    rows = {row.dedupe_key: row for row in await world.outbox()}
    assert sorted(rows) == ["k:1", "k:2", "k:3"]
    assert rows["k:2"].body == "first" and rows["k:1"].params == {"name": "second"}
    assert rows["k:3"].template == "lapsed_asn" and rows["k:3"].status is OutboxStatus.PENDING


async def test_a_sponsorship_lapsing_again_is_audited_without_second_notices(world: World) -> None:
    # Nothing paid since October 2025: three months in arrears on 16 January 2026.
    sponsorship = await world.sponsorship(
        PaymentPlan.MONTHLY, name="Siti", first_month=date(2025, 10, 1)
    )
    world.clock.now = datetime(2026, 1, 16, 9, tzinfo=JAKARTA).astimezone(UTC)
    first = await planner(world).plan()
    assert (first.lapsed, first.lapse_notices) == (1, 2)
    # Reactivated by hand (still unpaid), it lapses again the next day: same keys, no notices.
    async with world.engine.begin() as connection:
        await connection.execute(
            update(Sponsorship)
            .where(Sponsorship.id == sponsorship)
            .values(status=SponsorshipStatus.ACTIVE)
        )
    world.clock.now += timedelta(days=1)
    again = await planner(world).plan()
    assert (again.lapsed, again.lapse_notices, again.notices) == (1, 0, 0)
    assert await world.status(sponsorship) is SponsorshipStatus.LAPSED
    assert len(await world.outbox()) == 2
    async with world.engine.connect() as connection:
        result = await connection.execute(
            select(AuditLog.action, AuditLog.record_id, AuditLog.actor_type, AuditLog.opd_id)
        )
        audit = [tuple(row) for row in result]
    assert audit == [("sponsorship.lapsed", str(sponsorship), "system", world.opd_id)] * 2


async def test_a_payment_recorded_while_planning_prevents_the_lapse(world: World) -> None:
    sponsorship = await world.sponsorship(
        PaymentPlan.MONTHLY, name="Siti", first_month=date(2025, 10, 1)
    )
    world.clock.now = datetime(2026, 1, 16, 9, tzinfo=JAKARTA).astimezone(UTC)
    # Recorded after the planner's clock reading (as if during its run), not yet confirmed.
    await world.pay(
        sponsorship,
        date(2025, 10, 1),
        status=PaymentStatus.RECORDED,
        recorded=world.clock() + timedelta(seconds=1),
    )
    result = await planner(world).plan()
    assert (result.lapsed, result.lapse_notices) == (0, 0)
    assert await world.status(sponsorship) is SponsorshipStatus.ACTIVE


async def test_a_payment_recorded_between_a_pages_read_and_its_write_gets_no_reminder(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page is read in a transaction that only reads, then written in another: a payment
    committed in between (here: right after the page read its payments) is seen by the
    write, which leaves that sponsorship's reminder out; the other one of the page is
    written."""
    paying = await world.sponsorship(PaymentPlan.MONTHLY, name="Siti")
    other = await world.sponsorship(PaymentPlan.MONTHLY, name="Budi")
    world.clock.now = datetime(2026, 1, 10, 9, tzinfo=JAKARTA).astimezone(UTC)
    # Another process's engine: the planner's own (one connection on SQLite) is reading.
    elsewhere = create_engine(world.engine.url.render_as_string(hide_password=False))
    read_payments = dues_queries.confirmed_months

    async def payments_then_a_payment(*args: Any, **kwargs: Any) -> PaidMonths:
        found = await read_payments(*args, **kwargs)
        await dataclasses.replace(world, engine=elsewhere).pay(
            paying, date(2026, 1, 1), recorded=world.clock() + timedelta(seconds=1)
        )
        return found

    monkeypatch.setattr(dues_queries, "confirmed_months", payments_then_a_payment)
    try:
        result = await planner(world).plan()
    finally:
        await elsewhere.dispose()
    assert result.before5 == 1
    keys = [row.dedupe_key for row in await world.outbox("reminder.before5")]
    assert keys == [dues_queries.reminder_key("before5", other, date(2026, 1, 1))]


async def test_a_pages_planned_reminders_are_left_out_in_its_read_so_a_rerun_writes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page leaves out, in its read, the reminders whose keys exist: a re-run the same day
    opens no page's write (no `paid_since` read, no INSERT of rows all skipped); a page
    with one key missing (a new sponsorship, a deleted row) writes just that one."""
    ids = [await world.sponsorship(PaymentPlan.MONTHLY, name=f"W{n}") for n in range(5)]
    world.clock.now = datetime(2026, 1, 10, 9, tzinfo=JAKARTA).astimezone(UTC)
    assert (await planner(world, chunk_size=2).plan()).before5 == 5
    calls: dict[str, int] = {"paid_since": 0, "insert_named_notices": 0}

    def counted(name: str) -> Callable[..., Awaitable[Any]]:
        real = getattr(dues_queries, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await real(*args, **kwargs)

        return call

    for name in calls:
        monkeypatch.setattr(dues_queries, name, counted(name))
    assert await planner(world, chunk_size=2).plan() == PlanResult()
    assert calls == {"paid_since": 0, "insert_named_notices": 0}

    newcomer = await world.sponsorship(PaymentPlan.MONTHLY, name="Baru")
    async with world.engine.begin() as connection:
        await connection.execute(
            delete(Outbox).where(
                Outbox.dedupe_key == dues_queries.reminder_key("before5", ids[0], date(2026, 1, 1))
            )
        )
    assert (await planner(world, chunk_size=2).plan()).before5 == 2
    # The first page (ids 0-1) and the last (5: the newcomer) wrote; the second did not.
    assert calls == {"paid_since": 2, "insert_named_notices": 2}
    keys = sorted(row.dedupe_key for row in await world.outbox("reminder.before5"))
    assert keys == sorted(
        dues_queries.reminder_key("before5", sid, date(2026, 1, 1)) for sid in [*ids, newcomer]
    )


async def test_pages_write_from_sql_exactly_the_rows_rendered_one_by_one(world: World) -> None:
    """A page writes its reminders from SQL, the database putting each name into a text
    rendered once per (kind, status, language); the one-transaction planner renders each
    notice in Python. Same rows: every kind, both languages, the worker's own notices, and
    names with quotes, backslashes, newlines, non-ASCII and the format's braces."""
    names = ['Ñoño "Q" \\ {month}', "Siti 😀 Aminah", "Ani\nBaru", "Joko {0}", "O'Brien"]
    months = [date(2026, 1, 1), date(2025, 12, 1), date(2025, 11, 1), date(2025, 10, 1)]
    ids = [
        await world.sponsorship(
            PaymentPlan.MONTHLY,
            name=f"{name} {index}",
            first_month=first_month,
            phone=f"+62812000{index:04d}" if index % 3 else None,
        )
        for index, (name, first_month) in enumerate(
            (name, first_month) for name in names for first_month in months
        )
    ]
    await world.sponsorship(PaymentPlan.PAYROLL_DEDUCTION, name="Payroll")
    now = world.clock()
    # Every other sponsorship's ASN reads English.
    async with world.engine.begin() as connection:
        account = await _account(connection, "1002", now, Language.ENGLISH)
        english = await _asn(connection, account, world.opd_id, 'Ann "Smith"', now)
        await connection.execute(
            update(Sponsorship).where(Sponsorship.id.in_(ids[::2])).values(asn_id=english)
        )
    world.clock.now = datetime(2026, 1, 10, 9, tzinfo=JAKARTA).astimezone(UTC)

    one_by_one = await planner(world, Channel.WHATSAPP, None).plan()
    assert min(one_by_one.before5, one_by_one.overdue, one_by_one.escalation) > 0
    assert min(one_by_one.payroll, one_by_one.lapsed) > 0
    expected = await outbox_rows(world.engine)
    assert {row[3] for row in expected} >= {"reminder.before5", "at_risk.worker", "lapsed.pic"}
    assert {row[1] for row in expected} == {Channel.TELEGRAM, Channel.WHATSAPP}
    async with world.engine.begin() as connection:
        await connection.execute(delete(Outbox))
        await connection.execute(
            update(Sponsorship)
            .where(Sponsorship.status == SponsorshipStatus.LAPSED)
            .values(status=SponsorshipStatus.ACTIVE)
        )
    paged = await planner(world, Channel.WHATSAPP, 3).plan()
    assert paged == one_by_one
    assert await outbox_rows(world.engine) == expected
    assert await planner(world, Channel.WHATSAPP, 3).plan() == PlanResult()


async def test_sqlite_lapses_look_sponsorships_up_by_key_not_by_a_status_index(
    world: World,
) -> None:
    """Without statistics SQLite's planner took `ix_sponsorship_status_changed` for a lapse
    of 30 ids or more and read every dues-bearing row's entry for each statement (1.44
    million sponsorships: most of a run's time); the lapse's UPDATE goes by the key."""
    if world.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plan")
    ids = ", ".join(str(sponsorship_id) for sponsorship_id in range(1, 301))
    async with world.engine.connect() as connection:
        plan = await connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + dues_queries._SQLITE_LAPSE.format(ids=ids),
            {"now": "2026-01-16 02:00:00.000000", "read_at": "2026-01-16 02:00:00.000000"},
        )
        details = [row[3] for row in plan]
    assert details[0] == "SEARCH sponsorship USING INTEGER PRIMARY KEY (rowid=?)"
    assert not any("ix_sponsorship" in detail for detail in details)
