"""A whole year of dues with a frozen clock, the shipped holiday list and a discount window:
monthly, quarterly, regional-budget and payroll sponsorships, the reminder planner at 06:00
and the outbox dispatcher through the day. Reminders go out on the right days and never in
quiet hours, none after a payment, the lapse comes on the third unpaid month, and tenure
counts the months paid so far."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import partial

from sqlalchemy import select, update

import sertakan_data
from bot.settings import DispatcherSettings
from domain.dues import due_date, dues_status
from domain.months import add_months
from domain.tariff import FundingSource, parse_tariff
from domain.vocabulary import Channel, OutboxStatus, PaymentPlan, SponsorshipStatus
from domain.workdays import load_holidays
from handlers.i18n import Catalogs
from handlers.notices import Notices
from scheduler.dispatcher import Dispatcher
from scheduler.reminders import ReminderPlanner
from scheduler.sending import OutgoingNotice, SendResult, Sent
from sertakan_data import shipped
from storage import payments
from storage.dues_queries import cancel_payroll_lines
from storage.models import ChannelAccount, Sponsorship
from tests.scheduler import test_reminders
from tests.scheduler.test_reminders import ASN_CHAT, JAKARTA, PIC_CHAT, World, local_day

#: The office of the reminder tests (an OPD, its ASN and its PIC), as this module's fixture.
world = test_reminders.world

HOLIDAYS = load_holidays(shipped(sertakan_data.HOLIDAYS))
#: 50% off JKK and JKM from December 2025 through May 2026, not for regional budgets.
TARIFF = parse_tariff(
    "effective_from,effective_until,jkk_per_mille,jkm,discount_percent,"
    "discount_excluded_funding,note\n"
    "2015-07-01,2025-12-01,10,6800,0,,PP 44/2015\n"
    "2025-12-01,2026-06-01,10,6800,50,regional_budget,BPU discount\n"
    "2026-06-01,,10,6800,0,,PP 44/2015\n"
)
MONTHS = [add_months(date(2026, 1, 1), offset) for offset in range(12)]
QUARTERS = MONTHS[::3]
#: When the planner runs and the dispatcher ticks, local time (06:00 and 06:30 are quiet).
PLANNER_AT = time(6, 0)
TICKS_AT = (time(6, 30), time(7, 30), time(9, 0), time(13, 0), time(22, 0))
QUIET_FROM, QUIET_UNTIL = time(21, 0), time(7, 0)


def due(month: date) -> date:
    return due_date(month, HOLIDAYS)


class Recorder:
    """The Telegram sender: records each notice with the local time it went out."""

    channel = Channel.TELEGRAM

    def __init__(self, world: World) -> None:
        self._world = world
        self.sent: list[tuple[datetime, OutgoingNotice]] = []

    async def send(self, notice: OutgoingNotice) -> SendResult:
        self.sent.append((self._world.clock().astimezone(JAKARTA), notice))
        return Sent()


Action = Callable[[], Awaitable[None]]


def at(day: date, clock_time: time) -> datetime:
    return datetime.combine(day, clock_time, JAKARTA).astimezone(UTC)


async def test_a_year_of_dues_with_holidays_and_a_discount_window(world: World) -> None:
    monthly = await world.sponsorship(PaymentPlan.MONTHLY, name="Ani")
    regional = await world.sponsorship(PaymentPlan.MONTHLY, name="Rudi")
    quarterly = await world.sponsorship(PaymentPlan.QUARTERLY, name="Joko")
    payroll = [
        await world.sponsorship(PaymentPlan.PAYROLL_DEDUCTION, name=name)
        for name in ("Wati", "Yanto")
    ]
    stops = await world.sponsorship(PaymentPlan.MONTHLY, name="Dewi")
    async with world.engine.begin() as connection:
        await connection.execute(
            update(Sponsorship)
            .where(Sponsorship.id == regional)
            .values(funding_source=FundingSource.REGIONAL_BUDGET)
        )

    async def pay(sponsorship: int, month: date) -> None:
        await world.pay(sponsorship, month)

    notices = Notices(Catalogs())
    async with world.engine.connect() as connection:
        asn_account = (
            await connection.execute(
                select(ChannelAccount.id).where(ChannelAccount.external_id == ASN_CHAT)
            )
        ).scalar_one()
    recorded: dict[date, int] = {}

    async def record_quarter(quarter: date) -> None:
        # As the payment flow does: the record cancels the unsent reminders of its months.
        async with world.engine.begin() as connection:
            recorded[quarter] = await payments.record(
                connection,
                sponsorship_id=quarterly,
                first_month=quarter,
                months=3,
                amount=TARIFF.dues_for_months(quarter, 3),
                receipt_file_ref=None,
                account_id=asn_account,
                now=world.clock(),
            )
            await notices.payment_recorded(
                connection, quarterly, [add_months(quarter, i) for i in range(3)]
            )

    async def confirm_quarter(quarter: date) -> None:
        async with world.engine.begin() as connection:
            await payments.decide(
                connection,
                opd_id=world.opd_id,
                payment_id=recorded[quarter],
                pic_id=world.pic_id,
                confirm=True,
                reason=None,
                now=world.clock(),
            )
            await notices.payment_decided(connection, recorded[quarter], now=world.clock())

    async def payroll_month(month: date) -> None:
        async with world.engine.begin() as connection:
            amount = TARIFF.dues_for_months(month, 1, funding=FundingSource.PAYROLL_DEDUCTION)
            await payments.mark_payroll_month(
                connection,
                opd_id=world.opd_id,
                month=month,
                amount=amount,
                pic_id=world.pic_id,
                now=world.clock(),
            )
            await cancel_payroll_lines(connection, opd_id=world.opd_id, month=month)

    actions: dict[datetime, list[Action]] = {}
    for month in MONTHS:
        # Ani pays the day after her 5-day reminder; Rudi and the payroll on the due date
        # after the morning's sends; Dewi pays January to March only.
        actions.setdefault(at(due(month) - timedelta(days=4), time(12)), []).append(
            partial(pay, monthly, month)
        )
        actions.setdefault(at(due(month), time(10)), []).extend(
            [partial(pay, regional, month), partial(payroll_month, month)]
        )
        if month < date(2026, 4, 1):
            actions[at(due(month), time(10))].append(partial(pay, stops, month))
    for quarter in QUARTERS:
        # Joko records each quarter at 07:00 the day before it is due (after the planner
        # planned the 1-day reminder, before it may be sent); the PIC confirms at 21:30,
        # in quiet hours, so the ASN hears of it the next morning.
        day_before = due(quarter) - timedelta(days=1)
        actions.setdefault(at(day_before, time(7)), []).append(partial(record_quarter, quarter))
        actions.setdefault(at(day_before, time(21, 30)), []).append(
            partial(confirm_quarter, quarter)
        )

    sender = Recorder(world)
    slept = [0.0]  # the dispatcher's pacing sleeps on its own clock, not the frozen one

    async def sleep(seconds: float) -> None:
        slept[0] += max(0.0, seconds)

    dispatcher = Dispatcher(
        world.engine,
        {Channel.TELEGRAM: sender},
        world.clock,
        DispatcherSettings(),
        JAKARTA,
        monotonic=lambda: world.clock().timestamp() + slept[0],
        sleep=sleep,
        random=lambda: 1.0,
    )
    planner = ReminderPlanner(
        world.engine,
        Catalogs(),
        world.clock,
        timezone=JAKARTA,
        calendar=HOLIDAYS,
        tariff=TARIFF,
    )
    tenure: dict[date, dict[int, int]] = {}
    day = date(2026, 1, 1)
    while day <= date(2026, 12, 31):
        moments = sorted(
            [at(day, PLANNER_AT), *(at(day, t) for t in TICKS_AT)]
            + [moment for moment in actions if moment.astimezone(JAKARTA).date() == day]
        )
        for moment in dict.fromkeys(moments):
            world.clock.now = moment
            for action in actions.get(moment, []):
                await action()
            local = moment.astimezone(JAKARTA).time()
            if local == PLANNER_AT:
                await planner.plan()
            if local in TICKS_AT:
                # The runner ticks every second or so: a recipient's further rows, handed
                # back one chat interval later, go in the following ticks.
                for _ in range(20):
                    if not await dispatcher.tick():
                        break
                    world.clock.now += timedelta(seconds=2)
        if (day + timedelta(days=1)).day == 1:
            tenure[day] = await tenure_of(world, [monthly, quarterly, stops, *payroll], day)
        day += timedelta(days=1)

    sent = sender.sent
    # Everything planned went out, never in quiet hours: the reminders on the day they were
    # planned from 08:00, the PIC's 21:30 confirmations at the first tick after 07:00.
    rows = await world.outbox()
    assert {row.status for row in rows} == {OutboxStatus.SENT}
    assert len(rows) == len(sent)
    sent_at = {notice.outbox_id: moment for moment, notice in sent}
    for row in rows:
        moment = sent_at[row.id]
        assert QUIET_UNTIL <= moment.time() < QUIET_FROM, (moment, row.kind)
        if row.kind == "payment_confirmed":
            assert moment == at(local_day(row) + timedelta(days=1), time(7, 30)), row.body
        else:
            assert moment.date() == local_day(row) and moment.time() >= time(8), (moment, row.kind)
    confirmed = [row for row in rows if row.kind == "payment_confirmed"]
    assert sorted(local_day(row) for row in confirmed) == [
        due(q) - timedelta(days=1) for q in QUARTERS
    ]

    def sent_days(kind: str, sponsorship: int) -> dict[str, date]:
        return {
            row.dedupe_key.split(":")[2]: local_day(row)
            for row in rows
            if row.kind == kind and row.dedupe_key.endswith(f":{sponsorship}")
        }

    def body(kind: str, month: date, sponsorship: int) -> str:
        key = f"reminder:{kind.split('.')[1]}:{month:%Y-%m}:{sponsorship}"
        (row,) = [row for row in rows if row.dedupe_key == key]
        return row.body

    # Ani: the 5-day reminder every month, five days before the (moved) due date; paid the
    # next day, so never the 1-day one. Half price through May, full from June.
    assert sent_days("reminder.before5", monthly) == {
        f"{month:%Y-%m}": due(month) - timedelta(days=5) for month in MONTHS
    }
    assert sent_days("reminder.before1", monthly) == {}
    assert "Rp8.400" in body("reminder.before5", date(2026, 5, 1), monthly)
    assert "Rp16.800" in body("reminder.before5", date(2026, 6, 1), monthly)
    # Rudi's dues come from the regional budget: full price in the window too.
    assert sent_days("reminder.before1", regional) == {
        f"{month:%Y-%m}": due(month) - timedelta(days=1) for month in MONTHS
    }
    assert "Rp16.800" in body("reminder.before1", date(2026, 1, 1), regional)
    # Joko: once a quarter; the 1-day reminder planned that morning was cancelled unsent.
    assert sent_days("reminder.before5", quarterly) == {
        f"{q:%Y-%m}": due(q) - timedelta(days=5) for q in QUARTERS
    }
    assert sent_days("reminder.before1", quarterly) == {}
    assert "Rp25.200" in body("reminder.before5", date(2026, 1, 1), quarterly)  # 3 x 8,400
    assert "Rp33.600" in body("reminder.before5", date(2026, 4, 1), quarterly)  # 2 x 8,400 + 16,800
    assert "Rp50.400" in body("reminder.before5", date(2026, 7, 1), quarterly)
    # Payroll: the PIC gets one line per OPD (both workers) 5 and 1 day before; no ASN.
    lines = [row for row in rows if row.kind == "reminder.payroll"]
    assert {row.recipient for row in lines} == {PIC_CHAT}
    assert all("2 peserta" in row.body for row in lines)
    assert sorted(local_day(row) for row in lines) == sorted(
        due(month) - timedelta(days=days) for month in MONTHS for days in (5, 1)
    )
    assert not any(row.dedupe_key.endswith(f":{sid}") for row in rows for sid in payroll)
    # Dewi stops after March: overdue the day after April's due date, escalation after May's,
    # the lapse after June's (ASN and PIC told), then nothing more.
    assert sent_days("reminder.overdue", stops) == {"2026-04": due(date(2026, 4, 1)) + timedelta(1)}
    assert list(sent_days("reminder.escalation", stops).values()) == [
        due(date(2026, 5, 1)) + timedelta(days=1)
    ]
    lapse_day = due(date(2026, 6, 1)) + timedelta(days=1)
    lapsed = [row for row in rows if row.kind in ("lapsed.asn", "lapsed.pic")]
    assert sorted((row.recipient, local_day(row)) for row in lapsed) == [
        (ASN_CHAT, lapse_day),
        (PIC_CHAT, lapse_day),
    ]
    assert await world.status(stops) is SponsorshipStatus.LAPSED
    assert max(local_day(row) for row in rows if row.dedupe_key.endswith(f":{stops}")) == lapse_day
    for sid in (monthly, regional, quarterly, *payroll):
        assert await world.status(sid) is SponsorshipStatus.ACTIVE
    assert not any(row.kind in ("reminder.overdue", "reminder.escalation") and
                   not row.dedupe_key.endswith(f":{stops}") for row in rows)  # fmt: skip
    # Tenure at each month's end: the months paid so far, never a prepaid month ahead.
    for month_end, months in tenure.items():
        elapsed = month_end.month
        assert months[monthly] == elapsed
        assert months[quarterly] == elapsed
        assert months[payroll[0]] == elapsed
        assert months[stops] == min(elapsed, 3)


async def tenure_of(world: World, sponsorships: list[int], today: date) -> dict[int, int]:
    async with world.engine.connect() as connection:
        paid = await payments.paid_months(connection, sponsorships)
    return {
        sid: dues_status(
            first_month=date(2026, 1, 1),
            plan=PaymentPlan.MONTHLY,
            funding=FundingSource.ASN_PERSONAL,
            paid_months=paid[sid],
            today=today,
            calendar=HOLIDAYS,
            tariff=TARIFF,
        ).tenure_months
        for sid in sponsorships
    }


def test_the_year_meets_holidays_and_the_window() -> None:
    """The year above is only worth it if a listed holiday moves a due date and the
    discount changes amounts; this keeps its data honest."""
    assert HOLIDAYS.covers(2026)
    assert any(
        day in HOLIDAYS.holidays
        for month in MONTHS
        for day in (month.replace(day=15) + timedelta(days=n) for n in range(5))
        if day < due(month)
    )
    assert TARIFF.monthly_dues(date(2026, 5, 1)).total == 8_400
    assert TARIFF.monthly_dues(date(2026, 5, 1), funding=FundingSource.REGIONAL_BUDGET).total == (
        16_800
    )
    assert TARIFF.monthly_dues(date(2026, 6, 1)).total == 16_800
