"""What a month of BPU dues (JKK + JKM) costs, read from a dated tariff table.

The one place to answer "how much does a quarter cost on 1 March 2026":
`DEFAULT_TARIFF.plan_amount(PaymentPlan.QUARTERLY, date(2026, 3, 1))` is
Rp50,400 (3 x (JKK Rp10,000 + JKM Rp6,800)) at the PP 44/2015 tariff.

Tariffs change by regulation, so they are rows with an effective-from date,
never constants in code. Periods start and end on the first of a month,
because dues are owed per calendar month. Money is whole rupiah; every
rounding is half up.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from datetime import date
from enum import StrEnum

from domain.months import add_months, month_start
from domain.vocabulary import PaymentPlan

LOWEST_INCOME_BRACKET = 1_000_000
"""Lowest BPU declared-income bracket, in rupiah."""


class FundingSource(StrEnum):
    """Who pays the dues; a discount can exclude some sources."""

    ASN_PERSONAL = "asn_personal"
    PAYROLL_DEDUCTION = "payroll_deduction"
    REGIONAL_BUDGET = "regional_budget"
    VILLAGE_FUND = "village_fund"


class TariffTableError(ValueError):
    """The tariff rows contradict each other or themselves."""


class NoTariffError(LookupError):
    """No tariff period covers the asked month."""


@dataclasses.dataclass(slots=True, frozen=True)
class TariffPeriod:
    """One row of the tariff table.

    Covers months from `effective_from` up to, not including, `effective_until`
    (None: open-ended). JKK is `jkk_rate_permille` per mille of declared income
    (10 = 1%); JKM is a fixed amount. `discount_percent` applies to both unless
    the funding source is in `discount_excluded_funding`.
    """

    effective_from: date
    effective_until: date | None
    jkk_rate_permille: int
    jkm_amount: int
    discount_percent: int = 0
    discount_excluded_funding: frozenset[FundingSource] = frozenset()
    note: str = ""

    def covers(self, month: date) -> bool:
        """True when the month of `month` lies in this period."""
        first = month_start(month)
        return self.effective_from <= first and (
            self.effective_until is None or first < self.effective_until
        )

    def describe(self) -> str:
        """Short text naming the period, for error messages."""
        until = "open" if self.effective_until is None else self.effective_until.isoformat()
        note = f" ({self.note})" if self.note else ""
        return f"{self.effective_from.isoformat()}..{until}{note}"


@dataclasses.dataclass(slots=True, frozen=True)
class DuesBreakdown:
    """Dues owed for one month, after any discount, in rupiah."""

    month: date
    jkk: int
    jkm: int

    @property
    def total(self) -> int:
        return self.jkk + self.jkm


def _round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up; both non-negative."""
    return (2 * numerator + denominator) // (2 * denominator)


def _period_problem(period: TariffPeriod) -> str | None:
    if period.effective_from.day != 1:
        return "effective_from must be the first of a month"
    if period.effective_until is not None:
        if period.effective_until.day != 1:
            return "effective_until must be the first of a month"
        if period.effective_until <= period.effective_from:
            return "effective_until must be after effective_from"
    if period.jkk_rate_permille < 0 or period.jkm_amount < 0:
        return "rates and amounts must not be negative"
    if not 0 <= period.discount_percent <= 100:
        return "discount_percent must be 0..100"
    return None


class TariffTable:
    """Dated tariff periods that never overlap; gaps are allowed (they raise on lookup)."""

    __slots__ = ("_periods",)

    def __init__(self, periods: Iterable[TariffPeriod]) -> None:
        """Validate and keep the periods; raises TariffTableError naming the bad rows."""
        ordered = sorted(periods, key=lambda period: period.effective_from)
        if not ordered:
            raise TariffTableError("a tariff table needs at least one period")
        for period in ordered:
            problem = _period_problem(period)
            if problem is not None:
                raise TariffTableError(f"tariff period {period.describe()}: {problem}")
        for earlier, later in itertools.pairwise(ordered):
            if earlier.effective_until is None or earlier.effective_until > later.effective_from:
                raise TariffTableError(
                    f"tariff periods overlap: {earlier.describe()} and {later.describe()}"
                )
        self._periods = tuple(ordered)

    @property
    def periods(self) -> tuple[TariffPeriod, ...]:
        """The periods, oldest first."""
        return self._periods

    def period_for(self, month: date) -> TariffPeriod:
        """The period covering the month of `month`; raises NoTariffError if none does."""
        for period in self._periods:
            if period.covers(month):
                return period
        raise NoTariffError(f"no tariff period covers {month_start(month).isoformat()}")

    def monthly_dues(
        self,
        month: date,
        *,
        funding: FundingSource = FundingSource.ASN_PERSONAL,
        declared_income: int = LOWEST_INCOME_BRACKET,
    ) -> DuesBreakdown:
        """Dues for the month of `month` (any day of it).

        JKK = declared income x permille / 1000; the discount is then taken off
        JKK and JKM separately. Each step rounds half up to whole rupiah.
        Raises NoTariffError for an uncovered month, ValueError for a negative income.
        """
        if declared_income < 0:
            raise ValueError(f"declared income must not be negative, got {declared_income}")
        period = self.period_for(month)
        jkk = _round_half_up(declared_income * period.jkk_rate_permille, 1000)
        jkm = period.jkm_amount
        if period.discount_percent and funding not in period.discount_excluded_funding:
            kept_percent = 100 - period.discount_percent
            jkk = _round_half_up(jkk * kept_percent, 100)
            jkm = _round_half_up(jkm * kept_percent, 100)
        return DuesBreakdown(month=month_start(month), jkk=jkk, jkm=jkm)

    def dues_for_months(
        self,
        first_month: date,
        count: int,
        *,
        funding: FundingSource = FundingSource.ASN_PERSONAL,
        declared_income: int = LOWEST_INCOME_BRACKET,
    ) -> int:
        """Total dues for `count` consecutive months from `first_month`, each at its own tariff.

        Raises ValueError for a negative count, NoTariffError if any month is uncovered.
        """
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        return sum(
            self.monthly_dues(
                add_months(first_month, offset), funding=funding, declared_income=declared_income
            ).total
            for offset in range(count)
        )

    def plan_amount(
        self,
        plan: PaymentPlan,
        first_month: date,
        *,
        funding: FundingSource = FundingSource.ASN_PERSONAL,
        declared_income: int = LOWEST_INCOME_BRACKET,
    ) -> int:
        """What one payment under `plan` costs when it starts at `first_month`.

        The funding source is not derived from the plan: a payroll-deduction
        plan should pass FundingSource.PAYROLL_DEDUCTION itself.
        """
        return self.dues_for_months(
            first_month, plan.months_per_payment, funding=funding, declared_income=declared_income
        )


DEFAULT_TARIFF = TariffTable(
    [
        TariffPeriod(
            effective_from=date(2015, 7, 1),
            effective_until=None,
            jkk_rate_permille=10,
            jkm_amount=6_800,
            note="PP 44/2015 BPU: JKK 1% of declared income, JKM Rp6,800",
        )
    ]
)
"""Today's tariff. The temporary 50% BPU discount from December 2025 is not a
default row because its end date is not pinned; configuration may add it."""
