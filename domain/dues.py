"""The dues calendar of one sponsorship: when a month is due, what is paid, what is owed.

Everything here is derived from the confirmed payments and the plan, never
stored by hand (PRODUCT 4.4): paid-until, the next due date and amount, the months
in arrears, "protection at risk", lapse and tenure. All functions are pure;
months are `date` values on the first of the month (any day of a month is
accepted and read as that month).

Rules (PRODUCT 3):
- Dues for a month are due on the 15th of that month, moved to the next working
  day when the 15th is a weekend or a holiday (`WorkCalendar`).
- A month is in arrears once its due date has passed (the day after it) unpaid.
  Two months in arrears put protection at risk; three make the sponsorship lapse.
- Monthly and payroll-deduction plans pay one month at a time, quarterly three
  months ahead; 6 and 12 months ahead only when configuration allows them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from enum import StrEnum

from domain.months import add_months, month_start, months_between
from domain.tariff import FundingSource, TariffTable
from domain.vocabulary import PaymentPlan, SponsorshipStatus
from domain.workdays import WorkCalendar

DUE_DAY = 15
"""Day of the month by which that month's dues are paid."""

AT_RISK_ARREARS = 2
"""Months in arrears from which protection is at risk ("protection ends after the third")."""

LAPSE_ARREARS = 3
"""Months in arrears that make a sponsorship lapse (BPJS: non-active, register again)."""

DEFAULT_MAX_MONTHS_AHEAD = 12
"""Default of the configuration: how many months after the current one may be paid."""

_PAYING_STATUSES = frozenset({SponsorshipStatus.ACTIVE, SponsorshipStatus.CARD_HANDED_OVER})


def due_date(month: date, calendar: WorkCalendar) -> date:
    """The day the dues for the month of `month` are due: its 15th, or the next working day.

    Raises ValueError when the calendar has no working day within a year (a broken list).
    """
    return calendar.next_working_day(month_start(month).replace(day=DUE_DAY))


@dataclasses.dataclass(frozen=True, slots=True)
class DuesStatus:
    """Where a sponsorship's dues stand on one day, derived from its confirmed payments."""

    #: Last month of the unbroken run of confirmed months from the first month (None: none).
    paid_until: date | None
    #: First unpaid month (the first month of coverage when nothing is paid).
    next_month: date
    #: `due_date(next_month)`.
    next_due_date: date
    #: Months the next payment covers under the plan in force for `next_month`.
    next_months: int
    #: Rupiah for those months, each at its own tariff for the funding source.
    next_amount: int
    #: Unpaid months whose due date has passed (as of the day asked about).
    months_in_arrears: int
    #: Two or more months in arrears: the payer is warned protection ends after the third.
    at_risk: bool
    #: Three or more months in arrears: the sponsorship has lapsed.
    lapsed: bool
    #: Confirmed months from the first month up to and including the current month.
    tenure_months: int


def _months(months: Iterable[date]) -> frozenset[date]:
    return frozenset(month_start(month) for month in months)


def _first_unpaid(first_month: date, paid: frozenset[date]) -> date:
    month = first_month
    while month in paid:
        month = add_months(month, 1)
    return month


def plan_in_force(
    month: date,
    *,
    plan: PaymentPlan,
    next_plan: PaymentPlan | None = None,
    next_plan_from: date | None = None,
) -> PaymentPlan:
    """The plan that pays for the month of `month`: `next_plan` from the month of
    `next_plan_from` on (a pending plan change; both or neither), `plan` before.

    Who pays follows from it: the OPD's treasurer for payroll deduction, the
    ASN otherwise.
    """
    if next_plan is None or next_plan_from is None:
        return plan
    return next_plan if month_start(month) >= month_start(next_plan_from) else plan


def protected_from(first_month: date) -> date:
    """The day protection starts: the 1st of the sponsorship's first covered month.

    The ASN chooses that month at enrollment and its dues are what the first
    payment covers, so a card issued earlier (on 2 December for January) does
    not protect anyone before it. Protection then lasts while dues are paid.
    """
    return month_start(first_month)


def first_unpaid_month(first_month: date, paid_months: Iterable[date]) -> date:
    """The first month from `first_month` not among `paid_months`: where the next payment
    starts (`DuesStatus.next_month`, without the tariff and the calendar)."""
    return _first_unpaid(month_start(first_month), _months(paid_months))


def _next_payment_months(
    next_month: date,
    plan: PaymentPlan,
    next_plan: PaymentPlan | None,
    next_plan_from: date | None,
) -> int:
    if next_plan is None or next_plan_from is None:
        return plan.months_per_payment
    change = month_start(next_plan_from)
    if next_month >= change:
        return next_plan.months_per_payment
    # The old plan's payment stops short of the month the new plan takes over.
    return min(plan.months_per_payment, months_between(next_month, change))


def dues_status(
    *,
    first_month: date,
    plan: PaymentPlan,
    funding: FundingSource,
    paid_months: Iterable[date],
    today: date,
    calendar: WorkCalendar,
    tariff: TariffTable,
    next_plan: PaymentPlan | None = None,
    next_plan_from: date | None = None,
) -> DuesStatus:
    """The dues status of a sponsorship covered from `first_month`, as of `today`.

    `paid_months` are the months of confirmed payments (any order, duplicates
    and months before `first_month` are ignored). The next payment starts at the
    first unpaid month and covers the months of the plan in force for that
    month: `next_plan` from `next_plan_from` on (both or neither), `plan`
    before; a payment under the old plan never runs into the new plan's months.
    Payroll deduction pays one month at a time. The amount is at the lowest
    income bracket, each month at its own tariff for `funding`.

    Raises NoTariffError when the tariff does not cover the months of the next
    payment, ValueError from a broken calendar.
    """
    start = month_start(first_month)
    paid = frozenset(month for month in _months(paid_months) if month >= start)
    next_month = _first_unpaid(start, paid)
    paid_until = add_months(next_month, -1) if next_month > start else None
    next_months = _next_payment_months(next_month, plan, next_plan, next_plan_from)
    arrears = _arrears(start, paid, today, calendar)
    this_month = month_start(today)
    return DuesStatus(
        paid_until=paid_until,
        next_month=next_month,
        next_due_date=due_date(next_month, calendar),
        next_months=next_months,
        next_amount=tariff.dues_for_months(next_month, next_months, funding=funding),
        months_in_arrears=arrears,
        at_risk=arrears >= AT_RISK_ARREARS,
        lapsed=arrears >= LAPSE_ARREARS,
        tenure_months=sum(1 for month in paid if month <= this_month),
    )


def _arrears(start: date, paid: frozenset[date], today: date, calendar: WorkCalendar) -> int:
    """Unpaid months from `start` whose due date lies before `today`."""
    count = 0
    month = start
    # A month's due date is never before its 15th, so later months cannot be overdue.
    while month.replace(day=DUE_DAY) < today:
        if month not in paid and due_date(month, calendar) < today:
            count += 1
        month = add_months(month, 1)
    return count


def arrears_reached_on(
    next_month: date, paid_months: Iterable[date], count: int, calendar: WorkCalendar
) -> date:
    """The day a sponsorship's months in arrears reached `count`, as its payments stand:
    the day after the due date of its `count`-th unpaid month from `next_month` (its first
    unpaid month, `DuesStatus.next_month`; `count` >= 1).

    Meant for a sponsorship already `count` months behind (the day lies in the past);
    the PIC's digest tells news from what it said before by it.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    paid = _months(paid_months)
    month = month_start(next_month)
    unpaid = 0
    while True:
        if month not in paid:
            unpaid += 1
            if unpaid == count:
                return due_date(month, calendar) + timedelta(days=1)
        month = add_months(month, 1)


class PaidStanding(StrEnum):
    """Where a dues-bearing sponsorship's paid-until month stands on one day.

    The buckets of the coverage report's paid-until distribution (PRODUCT 6), by
    months in arrears as `dues_status` counts them (due dates included), so a
    sponsorship paid through last month is up to date until this month's due
    date has passed.
    """

    #: Nothing in arrears and paid beyond the current month.
    PAID_AHEAD = "paid_ahead"
    #: Nothing in arrears, nothing paid beyond the current month.
    UP_TO_DATE = "up_to_date"
    #: One month in arrears (the payer has an overdue reminder).
    ARREARS_1 = "arrears_1"
    #: Two months in arrears: protection at risk.
    ARREARS_2 = "arrears_2"
    #: Three or more: lapses at the reminder planner's next run.
    ARREARS_3 = "arrears_3"


@dataclasses.dataclass(frozen=True, slots=True)
class PaidRun:
    """What a sponsorship's confirmed months say whatever the day: the derived columns
    `sponsorship.paid_until` and `sponsorship.paid_after_gap` (storage/paid_until.py)."""

    #: Last month of the unbroken run of confirmed months from the first month (None: none).
    paid_until: date | None
    #: Confirmed months lie after the first unpaid month (a gap): the standing then
    #: needs the months themselves, not only `paid_until`.
    after_gap: bool

    def next_month(self, first_month: date) -> date:
        """The first unpaid month (`DuesStatus.next_month`)."""
        if self.paid_until is None:
            return month_start(first_month)
        return add_months(self.paid_until, 1)


def paid_run(first_month: date, paid_months: Iterable[date]) -> PaidRun:
    """The `PaidRun` of a sponsorship covered from `first_month` (`paid_months` as for
    `dues_status`: months before `first_month` and duplicates are ignored)."""
    start = month_start(first_month)
    paid = frozenset(month for month in _months(paid_months) if month >= start)
    next_month = _first_unpaid(start, paid)
    return PaidRun(
        paid_until=add_months(next_month, -1) if next_month > start else None,
        after_gap=any(month > next_month for month in paid),
    )


def run_standing(next_month: date, *, today: date, calendar: WorkCalendar) -> PaidStanding:
    """The `PaidStanding` of a sponsorship whose confirmed months are one unbroken run
    ending before `next_month` (`PaidRun.after_gap` False): equal to `paid_standing`,
    as only the months from `next_month` on can be in arrears or paid ahead."""
    return paid_standing(first_month=next_month, paid_months=(), today=today, calendar=calendar)


def paid_standing(
    *, first_month: date, paid_months: Iterable[date], today: date, calendar: WorkCalendar
) -> PaidStanding:
    """The `PaidStanding` of a sponsorship covered from `first_month`, as of `today`
    (`paid_months` as for `dues_status`)."""
    start = month_start(first_month)
    paid = frozenset(month for month in _months(paid_months) if month >= start)
    arrears = _arrears(start, paid, today, calendar)
    if arrears >= LAPSE_ARREARS:
        return PaidStanding.ARREARS_3
    if arrears == AT_RISK_ARREARS:
        return PaidStanding.ARREARS_2
    if arrears == 1:
        return PaidStanding.ARREARS_1
    if _first_unpaid(start, paid) > add_months(month_start(today), 1):
        return PaidStanding.PAID_AHEAD
    return PaidStanding.UP_TO_DATE


class PaymentProblem(StrEnum):
    """Why a recorded payment is refused."""

    #: The sponsorship is not (yet, or no longer) active with BPJS.
    NOT_ACTIVE = "not_active"
    #: The sponsorship has lapsed: the worker must be registered again.
    LAPSED = "lapsed"
    #: One of the months is already paid.
    ALREADY_PAID = "already_paid"
    #: A month lies further ahead than configuration allows prepaying.
    TOO_FAR_AHEAD = "too_far_ahead"
    #: The months leave a gap: they must be consecutive and start at the first unpaid month.
    NOT_NEXT = "not_next"
    #: The typed amount differs from the tariff's amount for these months.
    AMOUNT_MISMATCH = "amount_mismatch"
    #: The plan is not among those configuration allows.
    PLAN_NOT_ALLOWED = "plan_not_allowed"


def check_payment(
    *,
    months: Sequence[date],
    status: SponsorshipStatus,
    paid_months: Iterable[date],
    today: date,
    max_months_ahead: int,
    typed_amount: int | None,
    expected_amount: int,
    first_month: date | None = None,
) -> PaymentProblem | None:
    """The first reason a payment for `months` cannot be recorded, or None when it can.

    Checked in this order: the status (ACTIVE or CARD_HANDED_OVER pay; LAPSED
    gives LAPSED, any other NOT_ACTIVE); a month already paid; a month more than
    `max_months_ahead` months after today's month; months that are not
    consecutive or do not start at the first unpaid month (NOT_NEXT); a typed
    amount (None: not typed, the computed one is used) other than
    `expected_amount`. The first unpaid month is counted from `first_month`
    when given, otherwise from the earliest paid month; with neither, any
    starting month is accepted.

    Raises ValueError for an empty `months` or a negative `max_months_ahead`.
    """
    if not months:
        raise ValueError("a payment covers at least one month")
    if max_months_ahead < 0:
        raise ValueError(f"max_months_ahead must not be negative, got {max_months_ahead}")
    if status is SponsorshipStatus.LAPSED:
        return PaymentProblem.LAPSED
    if status not in _PAYING_STATUSES:
        return PaymentProblem.NOT_ACTIVE
    asked = [month_start(month) for month in months]
    paid = _months(paid_months)
    if any(month in paid for month in asked):
        return PaymentProblem.ALREADY_PAID
    last_allowed = add_months(month_start(today), max_months_ahead)
    if any(month > last_allowed for month in asked):
        return PaymentProblem.TOO_FAR_AHEAD
    ordered = sorted(asked)
    if any(months_between(a, b) != 1 for a, b in itertools.pairwise(ordered)):
        return PaymentProblem.NOT_NEXT
    start = month_start(first_month) if first_month is not None else min(paid, default=None)
    if start is not None and ordered[0] != _first_unpaid(start, paid):
        return PaymentProblem.NOT_NEXT
    if typed_amount is not None and typed_amount != expected_amount:
        return PaymentProblem.AMOUNT_MISMATCH
    return None


def allowed_plans(*, semiannual: bool, annual: bool) -> tuple[PaymentPlan, ...]:
    """The plans on offer: monthly, quarterly and payroll deduction always; 6 and 12
    months ahead only when configured. Ordered by months per payment, payroll last."""
    plans = [PaymentPlan.MONTHLY, PaymentPlan.QUARTERLY]
    if semiannual:
        plans.append(PaymentPlan.SEMIANNUAL)
    if annual:
        plans.append(PaymentPlan.ANNUAL)
    plans.append(PaymentPlan.PAYROLL_DEDUCTION)
    return tuple(plans)


def check_plan(plan: PaymentPlan, *, semiannual: bool, annual: bool) -> PaymentProblem | None:
    """PLAN_NOT_ALLOWED when `plan` is not in `allowed_plans(...)`, else None."""
    if plan in allowed_plans(semiannual=semiannual, annual=annual):
        return None
    return PaymentProblem.PLAN_NOT_ALLOWED


def one_month_count(next_months: Sequence[int]) -> bool:
    """Whether one payment for several sponsorships asks one number of months for all.

    `next_months` are the sponsorships' `DuesStatus.next_months` (what each one's
    plan in force asks for next). The rule: one count is asked when those are all
    the same (all monthly, all quarterly; always for a single sponsorship), and
    each sponsorship then pays that many months from its own first unpaid month.
    When they differ (a monthly and a quarterly worker), no count would suit
    both, so each pays its own plan's next payment instead.
    """
    return len(set(next_months)) <= 1


def plan_change_from(status: DuesStatus) -> date:
    """The month a plan change takes effect: the first month not already paid.

    Paid months run unbroken from the first month, so a prepaid quarter (or half
    year, or year) is wholly before this month: a change never splits a period
    that is already paid for, and what was paid stays paid under the old plan.
    Store it as the sponsorship's `next_plan_from`, then pass both to `dues_status`.
    """
    return status.next_month
