from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.dues import (
    DEFAULT_MAX_MONTHS_AHEAD,
    DuesStatus,
    PaymentProblem,
    allowed_plans,
    arrears_reached_on,
    check_payment,
    check_plan,
    due_date,
    dues_status,
    first_unpaid_month,
    one_month_count,
    plan_change_from,
    plan_in_force,
    protected_from,
)
from domain.months import add_months, months_between
from domain.tariff import DEFAULT_TARIFF, FundingSource, TariffPeriod, TariffTable
from domain.vocabulary import PaymentPlan, SponsorshipStatus
from domain.workdays import WorkCalendar

# Part of the 2026 decree, plus an invented holiday on Thursday 15 October so
# that a weekday 15th moves too.
CALENDAR_2026 = WorkCalendar(
    [
        date(2026, 1, 1),
        date(2026, 1, 16),
        date(2026, 2, 16),
        date(2026, 2, 17),
        date(2026, 5, 14),
        date(2026, 5, 15),
        date(2026, 6, 16),
        date(2026, 8, 17),
        date(2026, 10, 15),
        date(2026, 12, 24),
        date(2026, 12, 25),
    ]
)
# 50% off JKK + JKM from December 2025 through May 2026, not for regional budgets.
DISCOUNT_WINDOW = TariffTable(
    [
        TariffPeriod(date(2015, 7, 1), date(2025, 12, 1), 10, 6_800),
        TariffPeriod(
            date(2025, 12, 1),
            date(2026, 6, 1),
            10,
            6_800,
            discount_percent=50,
            discount_excluded_funding=frozenset({FundingSource.REGIONAL_BUDGET}),
        ),
        TariffPeriod(date(2026, 6, 1), None, 10, 6_800),
    ]
)
NO_HOLIDAYS = WorkCalendar([])
JAN = date(2026, 1, 1)


def m(month: int, year: int = 2026) -> date:
    return date(year, month, 1)


def status_of(
    paid: Iterable[date],
    today: date,
    *,
    plan: PaymentPlan = PaymentPlan.MONTHLY,
    funding: FundingSource = FundingSource.ASN_PERSONAL,
    first_month: date = JAN,
    calendar: WorkCalendar = CALENDAR_2026,
    tariff: TariffTable = DISCOUNT_WINDOW,
    next_plan: PaymentPlan | None = None,
    next_plan_from: date | None = None,
) -> DuesStatus:
    return dues_status(
        first_month=first_month,
        plan=plan,
        funding=funding,
        paid_months=paid,
        today=today,
        calendar=calendar,
        tariff=tariff,
        next_plan=next_plan,
        next_plan_from=next_plan_from,
    )


# --- due dates ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("month", "expected"),
    [
        (m(1), date(2026, 1, 15)),  # Thursday
        (m(2), date(2026, 2, 18)),  # Sunday, then Imlek leave and Imlek
        (m(3), date(2026, 3, 16)),  # Sunday
        (m(5), date(2026, 5, 18)),  # Friday is cuti bersama, then the weekend
        (m(8), date(2026, 8, 18)),  # Saturday, Sunday, Independence Day
        (m(10), date(2026, 10, 16)),  # a weekday holiday
        (date(2026, 12, 31), date(2026, 12, 15)),  # any day names its month
    ],
)
def test_due_date_is_the_15th_or_the_next_working_day(month: date, expected: date) -> None:
    assert due_date(month, CALENDAR_2026) == expected


def test_due_date_ignores_holidays_after_a_working_15th() -> None:
    assert due_date(m(6), CALENDAR_2026) == date(2026, 6, 15)  # the 16th is a holiday


holiday_sets = st.sets(st.dates(date(2025, 12, 1), date(2028, 1, 31)), max_size=60)
any_month = st.dates(date(2026, 1, 1), date(2027, 12, 31))


@given(month=any_month, holidays=holiday_sets)
def test_due_date_is_the_first_working_day_from_the_15th(month: date, holidays: set[date]) -> None:
    calendar = WorkCalendar(holidays)
    due = due_date(month, calendar)
    fifteenth = month.replace(day=15)
    assert due >= fifteenth
    assert calendar.is_working_day(due)
    day = fifteenth
    while day < due:
        assert not calendar.is_working_day(day)
        day += timedelta(days=1)


# --- dues status: properties ------------------------------------------------------

first_months = st.dates(date(2025, 6, 1), date(2026, 12, 1)).map(lambda d: d.replace(day=1))
paid_offsets = st.sets(st.integers(-3, 30), max_size=30)
todays = st.dates(date(2025, 1, 1), date(2028, 12, 31))
plans = st.sampled_from(PaymentPlan)
fundings = st.sampled_from(FundingSource)


def months_from(first: date, offsets: Iterable[int]) -> list[date]:
    return [add_months(first, offset) for offset in offsets]


@given(first=first_months, offsets=paid_offsets, today=todays, plan=plans, funding=fundings)
def test_paid_until_and_next_month_agree(
    first: date, offsets: set[int], today: date, plan: PaymentPlan, funding: FundingSource
) -> None:
    paid = set(months_from(first, offsets))
    status = status_of(paid, today, plan=plan, funding=funding, first_month=first)
    assert status.next_month not in paid
    assert status.next_month >= first
    if status.paid_until is None:
        assert status.next_month == first
    else:
        assert status.next_month == add_months(status.paid_until, 1)
        run = months_between(first, status.paid_until) + 1
        assert all(month in paid for month in months_from(first, range(run)))
    assert status.next_due_date == due_date(status.next_month, CALENDAR_2026)
    assert status.next_months == plan.months_per_payment
    assert status.next_amount == DISCOUNT_WINDOW.dues_for_months(
        status.next_month, plan.months_per_payment, funding=funding
    )


@given(first=first_months, offsets=paid_offsets, a=todays, b=todays, holidays=holiday_sets)
def test_arrears_never_fall_as_days_pass(
    first: date, offsets: set[int], a: date, b: date, holidays: set[date]
) -> None:
    earlier, later = sorted((a, b))
    paid = months_from(first, offsets)
    calendar = WorkCalendar(holidays)
    before = status_of(paid, earlier, first_month=first, calendar=calendar)
    after = status_of(paid, later, first_month=first, calendar=calendar)
    assert before.months_in_arrears <= after.months_in_arrears
    assert after.lapsed or not before.lapsed


@given(first=first_months, offsets=paid_offsets, today=todays)
def test_at_risk_from_two_and_lapsed_from_three_arrears(
    first: date, offsets: set[int], today: date
) -> None:
    status = status_of(months_from(first, offsets), today, first_month=first)
    assert status.at_risk == (status.months_in_arrears >= 2)
    assert status.lapsed == (status.months_in_arrears >= 3)


@given(
    first=first_months,
    offsets=paid_offsets,
    today=todays,
    holidays=holiday_sets,
    count=st.integers(1, 3),
)
def test_arrears_reach_a_count_on_the_day_named(
    first: date, offsets: set[int], today: date, holidays: set[date], count: int
) -> None:
    """The PIC's digest tells when a sponsor came two months behind: the day named is the
    first on which `dues_status` counts that many months in arrears."""
    paid = months_from(first, offsets)
    calendar = WorkCalendar(holidays)
    status = status_of(paid, today, first_month=first, calendar=calendar)
    if status.months_in_arrears < count:
        return
    day = arrears_reached_on(status.next_month, paid, count, calendar)
    assert day <= today
    on_day = status_of(paid, day, first_month=first, calendar=calendar)
    day_before = status_of(paid, day - timedelta(days=1), first_month=first, calendar=calendar)
    assert on_day.months_in_arrears >= count > day_before.months_in_arrears


@given(first=first_months, offsets=paid_offsets, today=todays)
def test_tenure_never_exceeds_the_months_elapsed(
    first: date, offsets: set[int], today: date
) -> None:
    status = status_of(months_from(first, offsets), today, first_month=first)
    elapsed = max(0, months_between(first, today) + 1)
    assert 0 <= status.tenure_months <= elapsed
    assert status.months_in_arrears + status.tenure_months <= elapsed


@given(first=first_months, unpaid=st.integers(0, 24), holidays=holiday_sets)
def test_nothing_paid_counts_every_month_past_its_due_date(
    first: date, unpaid: int, holidays: set[date]
) -> None:
    calendar = WorkCalendar(holidays)
    if unpaid == 0:
        today = first
    else:
        today = due_date(add_months(first, unpaid - 1), calendar) + timedelta(days=1)
    status = status_of([], today, first_month=first, calendar=calendar)
    assert status.months_in_arrears == unpaid
    assert status.paid_until is None
    assert status.tenure_months == 0


@given(first=first_months, ahead=st.integers(0, 12), today=todays)
def test_everything_paid_up_to_today_has_no_arrears(first: date, ahead: int, today: date) -> None:
    run = max(0, months_between(first, today) + 1 + ahead)
    status = status_of(months_from(first, range(run)), today, first_month=first)
    assert status.months_in_arrears == 0
    assert status.tenure_months == max(0, months_between(first, today) + 1)


# --- dues status: examples --------------------------------------------------------


def test_nothing_paid_before_coverage_starts() -> None:
    status = status_of([], date(2025, 12, 20))
    assert status == DuesStatus(
        paid_until=None,
        next_month=JAN,
        next_due_date=date(2026, 1, 15),
        next_months=1,
        next_amount=8_400,
        months_in_arrears=0,
        at_risk=False,
        lapsed=False,
        tenure_months=0,
    )


def test_the_due_date_itself_is_not_yet_in_arrears() -> None:
    assert status_of([], date(2026, 2, 18)).months_in_arrears == 1  # January only
    assert status_of([], date(2026, 2, 19)).months_in_arrears == 2


def test_protection_at_risk_after_two_months_then_lapsed_after_three() -> None:
    paid = [m(1)]
    assert status_of(paid, date(2026, 3, 16)).months_in_arrears == 1  # Feb (due 18 Feb)
    at_risk = status_of(paid, date(2026, 3, 17))
    assert (at_risk.months_in_arrears, at_risk.at_risk, at_risk.lapsed) == (2, True, False)
    assert not status_of(paid, date(2026, 4, 15)).lapsed
    lapsed = status_of(paid, date(2026, 4, 16))
    assert (lapsed.months_in_arrears, lapsed.lapsed) == (3, True)
    assert lapsed.next_month == m(2)
    assert lapsed.tenure_months == 1


def test_a_late_payment_clears_the_arrears() -> None:
    assert status_of([m(1), m(2), m(3)], date(2026, 3, 17)).months_in_arrears == 0


def test_a_gap_stops_paid_until_but_later_months_count_for_tenure() -> None:
    status = status_of([m(1), m(2), m(4)], date(2026, 4, 20))
    assert status.paid_until == m(2)
    assert status.next_month == m(3)
    assert status.months_in_arrears == 1
    assert status.tenure_months == 3


def test_months_before_the_first_month_are_ignored() -> None:
    status = status_of([m(11, 2025), m(12, 2025)], date(2026, 1, 10))
    assert status.paid_until is None
    assert status.tenure_months == 0


def test_prepaid_months_are_not_tenure_yet() -> None:
    status = status_of([m(month) for month in range(1, 13)], date(2026, 3, 1))
    assert status.paid_until == m(12)
    assert status.next_month == m(1, 2027)
    assert status.tenure_months == 3


def test_regional_budget_pays_full_price_in_the_discount_window() -> None:
    status = status_of([], date(2026, 1, 2), funding=FundingSource.REGIONAL_BUDGET)
    assert status.next_amount == 16_800


def test_quarter_from_march_2026_at_the_default_tariff() -> None:
    status = status_of(
        [m(1), m(2)], date(2026, 2, 20), plan=PaymentPlan.QUARTERLY, tariff=DEFAULT_TARIFF
    )
    assert (status.next_month, status.next_months, status.next_amount) == (m(3), 3, 50_400)


@pytest.mark.parametrize(
    ("plan", "months", "amount"),
    [(PaymentPlan.SEMIANNUAL, 6, 6 * 16_800), (PaymentPlan.ANNUAL, 12, 12 * 16_800)],
)
def test_six_and_twelve_month_plans(plan: PaymentPlan, months: int, amount: int) -> None:
    status = status_of([], date(2026, 6, 1), plan=plan, first_month=m(7))
    assert (status.next_months, status.next_amount) == (months, amount)


# --- plan changes -----------------------------------------------------------------


def test_plan_change_applies_after_the_prepaid_quarter() -> None:
    paid = [m(1), m(2), m(3)]
    now = status_of(paid, date(2026, 2, 5), plan=PaymentPlan.QUARTERLY)
    change = plan_change_from(now)
    assert change == m(4)
    later = status_of(
        paid,
        date(2026, 4, 1),
        plan=PaymentPlan.QUARTERLY,
        next_plan=PaymentPlan.MONTHLY,
        next_plan_from=change,
    )
    assert (later.next_month, later.next_months, later.next_amount) == (m(4), 1, 8_400)


def test_pending_change_is_not_applied_before_its_month() -> None:
    status = status_of(
        [],
        date(2025, 12, 20),
        plan=PaymentPlan.MONTHLY,
        next_plan=PaymentPlan.QUARTERLY,
        next_plan_from=m(2),
    )
    assert (status.next_month, status.next_months) == (JAN, 1)
    after = status_of(
        [JAN],
        date(2026, 1, 20),
        plan=PaymentPlan.MONTHLY,
        next_plan=PaymentPlan.QUARTERLY,
        next_plan_from=m(2),
    )
    assert (after.next_month, after.next_months, after.next_amount) == (m(2), 3, 3 * 8_400)


def test_old_plan_payment_stops_where_the_new_plan_starts() -> None:
    status = status_of(
        [],
        date(2026, 1, 2),
        plan=PaymentPlan.QUARTERLY,
        next_plan=PaymentPlan.MONTHLY,
        next_plan_from=m(3),
    )
    assert (status.next_months, status.next_amount) == (2, 2 * 8_400)


def test_plan_change_from_nothing_paid_is_the_first_month() -> None:
    assert plan_change_from(status_of([], date(2025, 12, 1))) == JAN


@given(
    first=first_months,
    offsets=paid_offsets,
    today=todays,
    plan=plans,
    next_plan=plans,
    change_after=st.integers(0, 30),
)
def test_the_next_payment_follows_the_plan_in_force_for_its_month(
    first: date,
    offsets: set[int],
    today: date,
    plan: PaymentPlan,
    next_plan: PaymentPlan,
    change_after: int,
) -> None:
    paid = months_from(first, offsets)
    change = add_months(first, change_after)
    status = status_of(
        paid, today, plan=plan, first_month=first, next_plan=next_plan, next_plan_from=change
    )
    assert first_unpaid_month(first, paid) == status.next_month
    in_force = plan_in_force(
        status.next_month, plan=plan, next_plan=next_plan, next_plan_from=change
    )
    assert in_force is (next_plan if status.next_month >= change else plan)
    if status.next_month >= change:
        assert status.next_months == next_plan.months_per_payment
    else:
        # The old plan's payment stops short of the change.
        assert status.next_months <= plan.months_per_payment
        assert add_months(status.next_month, status.next_months) <= change


def test_plan_in_force_without_a_pending_change_is_the_plan() -> None:
    for plan in PaymentPlan:
        assert plan_in_force(date(2030, 7, 31), plan=plan) is plan
        # A change needs both the plan and its month.
        assert plan_in_force(JAN, plan=plan, next_plan=PaymentPlan.QUARTERLY) is plan
    assert (
        plan_in_force(
            date(2026, 3, 31),
            plan=PaymentPlan.MONTHLY,
            next_plan=PaymentPlan.PAYROLL_DEDUCTION,
            next_plan_from=date(2026, 3, 1),
        )
        is PaymentPlan.PAYROLL_DEDUCTION
    )


# --- a frozen year ----------------------------------------------------------------

# Hand-worked from CALENDAR_2026 and DISCOUNT_WINDOW (Rp8,400 a month through
# May, Rp16,800 from June): month -> (due date, monthly amount).
YEAR_2026 = {
    1: (date(2026, 1, 15), 8_400),
    2: (date(2026, 2, 18), 8_400),
    3: (date(2026, 3, 16), 8_400),
    4: (date(2026, 4, 15), 8_400),
    5: (date(2026, 5, 18), 8_400),
    6: (date(2026, 6, 15), 16_800),
    7: (date(2026, 7, 15), 16_800),
    8: (date(2026, 8, 18), 16_800),
    9: (date(2026, 9, 15), 16_800),
    10: (date(2026, 10, 16), 16_800),
    11: (date(2026, 11, 16), 16_800),
    12: (date(2026, 12, 15), 16_800),
}


@pytest.mark.parametrize(
    ("plan", "funding"),
    [
        (PaymentPlan.MONTHLY, FundingSource.ASN_PERSONAL),
        (PaymentPlan.PAYROLL_DEDUCTION, FundingSource.PAYROLL_DEDUCTION),
    ],
)
def test_a_year_paid_monthly_on_the_due_date(plan: PaymentPlan, funding: FundingSource) -> None:
    paid: list[date] = []
    for month, (due, amount) in YEAR_2026.items():
        before = status_of(paid, date(2026, month, 1), plan=plan, funding=funding)
        assert (before.next_month, before.next_due_date) == (m(month), due)
        assert (before.next_months, before.next_amount) == (1, amount)
        assert before.months_in_arrears == 0
        assert before.tenure_months == month - 1
        paid.append(before.next_month)
        on_due = status_of(paid, due, plan=plan, funding=funding)
        assert on_due.paid_until == m(month)
        assert on_due.tenure_months == month
    assert status_of(paid, date(2026, 12, 31), plan=plan, funding=funding).next_due_date == (
        date(2027, 1, 15)
    )


def test_a_year_of_payroll_marked_paid_after_the_due_date() -> None:
    # The PIC marks payroll months paid in bulk on the 20th: a few days in arrears each month.
    paid: list[date] = []
    for month, (due, amount) in YEAR_2026.items():
        overdue = status_of(
            paid,
            due + timedelta(days=1),
            plan=PaymentPlan.PAYROLL_DEDUCTION,
            funding=FundingSource.PAYROLL_DEDUCTION,
        )
        assert (overdue.next_month, overdue.next_amount) == (m(month), amount)
        assert (overdue.months_in_arrears, overdue.at_risk) == (1, False)
        paid.append(m(month))
        marked = status_of(
            paid,
            date(2026, month, 20),
            plan=PaymentPlan.PAYROLL_DEDUCTION,
            funding=FundingSource.PAYROLL_DEDUCTION,
        )
        assert marked.months_in_arrears == 0


def test_a_year_paid_quarterly() -> None:
    quarters = {  # first month of the quarter -> its amount
        1: 3 * 8_400,
        4: 2 * 8_400 + 16_800,  # April and May discounted, June not
        7: 3 * 16_800,
        10: 3 * 16_800,
    }
    paid: list[date] = []
    for month, (due, _) in YEAR_2026.items():
        quarter_start = month - (month - 1) % 3
        status = status_of(paid, date(2026, month, 10), plan=PaymentPlan.QUARTERLY)
        if month == quarter_start:
            assert (status.next_month, status.next_due_date) == (m(month), due)
            assert (status.next_months, status.next_amount) == (3, quarters[month])
            paid.extend(add_months(m(month), offset) for offset in range(3))
        else:
            following = quarter_start + 3
            if following <= 12:
                assert status.next_month == m(following)
                assert status.next_due_date == YEAR_2026[following][0]
                assert status.next_amount == quarters[following]
            else:
                assert status.next_month == m(1, 2027)
                assert status.next_due_date == date(2027, 1, 15)
                assert status.next_amount == 3 * 16_800
            assert status.paid_until == add_months(m(quarter_start), 2)
        assert status.months_in_arrears == 0


# --- payments ---------------------------------------------------------------------


def check(
    months: list[date],
    *,
    status: SponsorshipStatus = SponsorshipStatus.ACTIVE,
    paid: Iterable[date] = (m(1), m(2)),
    today: date = date(2026, 3, 10),
    max_months_ahead: int = DEFAULT_MAX_MONTHS_AHEAD,
    typed_amount: int | None = None,
    expected_amount: int = 16_800,
    first_month: date | None = None,
) -> PaymentProblem | None:
    return check_payment(
        months=months,
        status=status,
        paid_months=paid,
        today=today,
        max_months_ahead=max_months_ahead,
        typed_amount=typed_amount,
        expected_amount=expected_amount,
        first_month=first_month,
    )


@pytest.mark.parametrize("status", [SponsorshipStatus.ACTIVE, SponsorshipStatus.CARD_HANDED_OVER])
def test_the_next_months_of_an_active_sponsorship_can_be_paid(
    status: SponsorshipStatus,
) -> None:
    assert check([m(3)], status=status) is None
    assert check([m(5), m(3), m(4)], status=status, typed_amount=16_800) is None


def test_lapsed_sponsorship_cannot_be_paid() -> None:
    assert check([m(3)], status=SponsorshipStatus.LAPSED) is PaymentProblem.LAPSED


@pytest.mark.parametrize(
    "status",
    [
        SponsorshipStatus.WAITING_FOR_PIC,
        SponsorshipStatus.RETURNED,
        SponsorshipStatus.ACCEPTED,
        SponsorshipStatus.SUBMITTED,
        SponsorshipStatus.ENDED,
    ],
)
def test_sponsorship_not_active_cannot_be_paid(status: SponsorshipStatus) -> None:
    assert check([m(3)], status=status) is PaymentProblem.NOT_ACTIVE


def test_a_month_already_paid_is_refused() -> None:
    assert check([m(2), m(3)]) is PaymentProblem.ALREADY_PAID
    assert check([date(2026, 1, 31)]) is PaymentProblem.ALREADY_PAID


def test_prepayment_is_limited_by_configuration() -> None:
    paid = [m(month) for month in range(1, 13)]
    today = date(2026, 11, 20)
    # Up to November 2027 (12 months after November 2026) may be paid.
    next_year = [m(month, 2027) for month in range(1, 12)]
    assert check(next_year, paid=paid, today=today) is None
    too_far = [*next_year, m(12, 2027)]
    assert check(too_far, paid=paid, today=today) is PaymentProblem.TOO_FAR_AHEAD
    assert check([m(1, 2027)], paid=paid, today=today, max_months_ahead=2) is None
    assert (
        check([m(1, 2027)], paid=paid, today=today, max_months_ahead=1)
        is PaymentProblem.TOO_FAR_AHEAD
    )


def test_months_must_start_at_the_first_unpaid_month_without_a_gap() -> None:
    assert check([m(4)]) is PaymentProblem.NOT_NEXT
    assert check([m(3), m(5)]) is PaymentProblem.NOT_NEXT
    assert check([m(3), m(3)]) is PaymentProblem.NOT_NEXT


def test_first_payment_starts_at_the_first_month_when_known() -> None:
    assert check([m(2)], paid=[], first_month=JAN) is PaymentProblem.NOT_NEXT
    assert check([JAN], paid=[], first_month=JAN) is None
    # Without the first month, a first payment may start anywhere.
    assert check([m(2)], paid=[]) is None


def test_a_gap_in_the_history_must_be_paid_first() -> None:
    paid = [m(1), m(2), m(4)]
    assert check([m(5)], paid=paid, today=date(2026, 4, 20)) is PaymentProblem.NOT_NEXT
    assert check([m(3)], paid=paid, today=date(2026, 4, 20)) is None


def test_typed_amount_must_match_the_tariff() -> None:
    assert check([m(3)], typed_amount=16_000) is PaymentProblem.AMOUNT_MISMATCH
    assert check([m(3)], typed_amount=16_800) is None


def test_first_problem_wins() -> None:
    assert check([m(2)], status=SponsorshipStatus.LAPSED, typed_amount=1) is PaymentProblem.LAPSED
    assert check([m(2), m(5)], typed_amount=1) is PaymentProblem.ALREADY_PAID
    assert check([m(5, 2027)], typed_amount=1) is PaymentProblem.TOO_FAR_AHEAD
    assert check([m(4)], typed_amount=1) is PaymentProblem.NOT_NEXT


def test_an_empty_payment_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one month"):
        check([])
    with pytest.raises(ValueError, match="max_months_ahead"):
        check([m(3)], max_months_ahead=-1)


# --- plans on offer ---------------------------------------------------------------


def test_plans_on_offer_follow_configuration() -> None:
    basic = (PaymentPlan.MONTHLY, PaymentPlan.QUARTERLY, PaymentPlan.PAYROLL_DEDUCTION)
    assert allowed_plans(semiannual=False, annual=False) == basic
    assert allowed_plans(semiannual=True, annual=True) == (
        PaymentPlan.MONTHLY,
        PaymentPlan.QUARTERLY,
        PaymentPlan.SEMIANNUAL,
        PaymentPlan.ANNUAL,
        PaymentPlan.PAYROLL_DEDUCTION,
    )
    assert PaymentPlan.ANNUAL in allowed_plans(semiannual=False, annual=True)
    assert PaymentPlan.SEMIANNUAL not in allowed_plans(semiannual=False, annual=True)


def test_a_plan_not_configured_is_refused() -> None:
    assert check_plan(PaymentPlan.ANNUAL, semiannual=True, annual=False) is (
        PaymentProblem.PLAN_NOT_ALLOWED
    )
    assert check_plan(PaymentPlan.ANNUAL, semiannual=False, annual=True) is None
    assert check_plan(PaymentPlan.PAYROLL_DEDUCTION, semiannual=False, annual=False) is None


@pytest.mark.parametrize(
    ("plan", "months"),
    [
        (PaymentPlan.MONTHLY, 1),
        (PaymentPlan.QUARTERLY, 3),
        (PaymentPlan.PAYROLL_DEDUCTION, 1),
        (PaymentPlan.SEMIANNUAL, 6),
        (PaymentPlan.ANNUAL, 12),
    ],
)
def test_months_per_payment(plan: PaymentPlan, months: int) -> None:
    assert plan.months_per_payment == months


def test_one_month_count_for_several_only_when_their_plans_agree() -> None:
    monthly, quarterly = PaymentPlan.MONTHLY.months_per_payment, 3
    assert one_month_count([monthly])  # one worker: always asked, as before
    assert one_month_count([monthly, monthly, monthly])
    assert one_month_count([quarterly, quarterly])
    assert not one_month_count([monthly, quarterly])


def test_protection_starts_on_the_first_of_the_first_covered_month() -> None:
    # Issue 12: a card issued on 2 December for January protects from 1 January, not at once.
    assert protected_from(date(2027, 1, 1)) == date(2027, 1, 1)
    assert protected_from(date(2027, 1, 17)) == date(2027, 1, 1)
