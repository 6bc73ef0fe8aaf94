"""What a month of BPU dues (JKK + JKM) costs, read from a dated tariff table.

The one place to answer "how much does a quarter cost on 1 March 2026":
`DEFAULT_TARIFF.plan_amount(PaymentPlan.QUARTERLY, date(2026, 3, 1))` is
Rp50,400 (3 x (JKK Rp10,000 + JKM Rp6,800)) at the PP 44/2015 tariff.

Tariffs change by regulation, so they are rows with an effective-from date,
never constants in code. An administrator keeps them in a CSV file
(`sertakan_data/tariff_bpu.csv`, read with `load_tariff`); `DEFAULT_TARIFF` holds the
same numbers for when no file is configured. Periods start and end on the first of a month,
because dues are owed per calendar month. Money is whole rupiah; every
rounding is half up.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from pathlib import Path

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


class TariffFileError(TariffTableError):
    """A tariff file cannot be read; `line` is the 1-based line at fault (None: the whole file)."""

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


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
"""Today's tariff, the same row as the shipped `sertakan_data/tariff_bpu.csv`. The
temporary 50% BPU discount from December 2025 is not a default row because its
end date is not pinned; an administrator adds it to the tariff file."""


_REQUIRED_COLUMNS = ("effective_from", "effective_until", "jkk_per_mille", "jkm")
_OPTIONAL_COLUMNS = ("discount_percent", "discount_excluded_funding", "note")


def _overlap(a: TariffPeriod, b: TariffPeriod) -> bool:
    a_before_b = a.effective_until is not None and a.effective_until <= b.effective_from
    b_before_a = b.effective_until is not None and b.effective_until <= a.effective_from
    return not (a_before_b or b_before_a)


def _cell_date(value: str, column: str, line: int) -> date:
    if not value:
        raise TariffFileError(f"{column} is missing", line=line)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise TariffFileError(f"{column} {value!r} is not a date (YYYY-MM-DD)", line=line) from None


def _cell_int(value: str, column: str, line: int) -> int:
    if not value:
        raise TariffFileError(f"{column} is missing", line=line)
    try:
        return int(value)
    except ValueError:
        raise TariffFileError(f"{column} {value!r} is not a whole number", line=line) from None


def _cell_fundings(value: str, line: int) -> frozenset[FundingSource]:
    known = {source.value for source in FundingSource}
    fundings: set[FundingSource] = set()
    for word in (part.strip() for part in value.split(";")):
        if not word:
            continue
        if word not in known:
            raise TariffFileError(
                f"discount_excluded_funding {word!r} is not one of {', '.join(sorted(known))}",
                line=line,
            )
        fundings.add(FundingSource(word))
    return frozenset(fundings)


def _row_period(cells: dict[str, str], line: int) -> TariffPeriod:
    until = cells["effective_until"]
    discount = cells.get("discount_percent", "")
    period = TariffPeriod(
        effective_from=_cell_date(cells["effective_from"], "effective_from", line),
        effective_until=_cell_date(until, "effective_until", line) if until else None,
        jkk_rate_permille=_cell_int(cells["jkk_per_mille"], "jkk_per_mille", line),
        jkm_amount=_cell_int(cells["jkm"], "jkm", line),
        discount_percent=_cell_int(discount, "discount_percent", line) if discount else 0,
        discount_excluded_funding=_cell_fundings(cells.get("discount_excluded_funding", ""), line),
        note=cells.get("note", ""),
    )
    problem = _period_problem(period)
    if problem is not None:
        raise TariffFileError(problem, line=line)
    return period


def parse_tariff(text: str) -> TariffTable:
    """A tariff table from the text of a tariff CSV.

    Header (any order, case-insensitive): `effective_from,effective_until,
    jkk_per_mille,jkm` and optionally `discount_percent,discount_excluded_funding,
    note`. Dates are ISO (the first of a month); an empty `effective_until` means
    open-ended; an empty `discount_percent` means 0; `discount_excluded_funding`
    lists FundingSource values separated by ";". Blank lines and lines starting
    with "#" are skipped; extra columns are ignored.

    Raises TariffFileError naming the line: a missing header column, a malformed
    cell, an inconsistent row, or a row whose period overlaps a row above it
    (the message names that earlier line too). A file without rows is refused.
    """
    lines = [
        "" if line.lstrip().startswith("#") else line for line in text.lstrip("\ufeff").splitlines()
    ]
    reader = csv.reader(io.StringIO("\n".join(lines), newline=""))
    columns: list[str] | None = None
    rows: list[tuple[int, TariffPeriod]] = []
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if columns is None:
            columns = [cell.strip().casefold() for cell in record]
            missing = [name for name in _REQUIRED_COLUMNS if name not in columns]
            if missing:
                raise TariffFileError(
                    f"the header lacks the column(s) {', '.join(missing)}; found {record!r}",
                    line=line,
                )
            continue
        wanted = (*_REQUIRED_COLUMNS, *_OPTIONAL_COLUMNS)
        cells = {
            name: (record[index].strip() if index < len(record) else "")
            for index, name in enumerate(columns)
            if name in wanted
        }
        period = _row_period(cells, line)
        for earlier_line, earlier in rows:
            if _overlap(earlier, period):
                raise TariffFileError(
                    f"period {period.describe()} overlaps {earlier.describe()} "
                    f"on line {earlier_line}",
                    line=line,
                )
        rows.append((line, period))
    if columns is None:
        raise TariffFileError("the file is empty; expected a header row")
    if not rows:
        raise TariffFileError("the file has a header but no tariff rows")
    return TariffTable(period for _, period in rows)


def load_tariff(path: Path) -> TariffTable:
    """Read a tariff CSV (UTF-8, see `parse_tariff`); start-up does this once."""
    return parse_tariff(path.read_text(encoding="utf-8"))
