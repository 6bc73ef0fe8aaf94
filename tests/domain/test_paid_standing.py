"""The paid-until standing of the coverage report agrees with `dues_status`."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.dues import PaidStanding, dues_status, paid_standing
from domain.months import add_months
from domain.tariff import DEFAULT_TARIFF, FundingSource
from domain.vocabulary import PaymentPlan
from domain.workdays import WorkCalendar

# Sunday 15 November 2026 moves November's due date to Monday the 16th.
CALENDAR = WorkCalendar([])
FIRST = date(2026, 6, 1)


def months(first: date, count: int) -> list[date]:
    return [add_months(first, offset) for offset in range(count)]


@pytest.mark.parametrize(
    ("today", "paid", "expected"),
    [
        # Paid through October: November is due on the 16th, so not yet overdue.
        (date(2026, 11, 16), months(FIRST, 5), PaidStanding.UP_TO_DATE),
        (date(2026, 11, 17), months(FIRST, 5), PaidStanding.ARREARS_1),
        # Paid through November: current; through December: ahead.
        (date(2026, 11, 20), months(FIRST, 6), PaidStanding.UP_TO_DATE),
        (date(2026, 11, 20), months(FIRST, 7), PaidStanding.PAID_AHEAD),
        # Paid through August: September and October overdue, November not yet.
        (date(2026, 11, 2), months(FIRST, 3), PaidStanding.ARREARS_2),
        (date(2026, 11, 17), months(FIRST, 3), PaidStanding.ARREARS_3),
        (date(2026, 11, 17), [], PaidStanding.ARREARS_3),
        # A gap counts: July unpaid, everything after paid.
        (date(2026, 11, 20), [FIRST, *months(date(2026, 8, 1), 4)], PaidStanding.ARREARS_1),
    ],
)
def test_standing_by_months_overdue_and_paid_ahead(
    today: date, paid: list[date], expected: PaidStanding
) -> None:
    assert (
        paid_standing(first_month=FIRST, paid_months=paid, today=today, calendar=CALENDAR)
        is expected
    )


def test_a_sponsorship_not_yet_due_is_current() -> None:
    assert (
        paid_standing(
            first_month=date(2026, 12, 1),
            paid_months=[],
            today=date(2026, 11, 20),
            calendar=CALENDAR,
        )
        is PaidStanding.UP_TO_DATE
    )


def test_a_holiday_on_the_due_date_keeps_the_month_current_a_day_longer() -> None:
    holiday = WorkCalendar([date(2026, 12, 15)])
    paid = months(FIRST, 6)  # through November
    day = date(2026, 12, 16)
    assert (
        paid_standing(first_month=FIRST, paid_months=paid, today=day, calendar=holiday)
        is PaidStanding.UP_TO_DATE
    )
    assert (
        paid_standing(first_month=FIRST, paid_months=paid, today=day, calendar=CALENDAR)
        is PaidStanding.ARREARS_1
    )


@given(
    paid=st.sets(st.integers(min_value=0, max_value=30), max_size=30),
    day=st.integers(min_value=0, max_value=900),
)
def test_agrees_with_dues_status(paid: set[int], day: int) -> None:
    today = date.fromordinal(FIRST.toordinal() + day)
    paid_months = [add_months(FIRST, offset) for offset in paid]
    status = dues_status(
        first_month=FIRST,
        plan=PaymentPlan.MONTHLY,
        funding=FundingSource.ASN_PERSONAL,
        paid_months=paid_months,
        today=today,
        calendar=CALENDAR,
        tariff=DEFAULT_TARIFF,
    )
    standing = paid_standing(
        first_month=FIRST, paid_months=paid_months, today=today, calendar=CALENDAR
    )
    arrears = min(status.months_in_arrears, 3)
    if arrears:
        assert standing.value == f"arrears_{arrears}"
    elif status.paid_until is not None and status.paid_until > today.replace(day=1):
        assert standing is PaidStanding.PAID_AHEAD
    else:
        assert standing is PaidStanding.UP_TO_DATE
