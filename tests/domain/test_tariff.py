from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sertakan_data
from domain.months import add_months
from domain.tariff import (
    DEFAULT_TARIFF,
    LOWEST_INCOME_BRACKET,
    DuesBreakdown,
    FundingSource,
    NoTariffError,
    TariffFileError,
    TariffPeriod,
    TariffTable,
    TariffTableError,
    load_tariff,
    parse_tariff,
)
from domain.vocabulary import PaymentPlan
from sertakan_data import shipped

SHIPPED_TARIFF = shipped(sertakan_data.TARIFF)

BASE = TariffPeriod(
    effective_from=date(2015, 7, 1),
    effective_until=date(2025, 12, 1),
    jkk_rate_permille=10,
    jkm_amount=6_800,
    note="PP 44/2015",
)
DISCOUNT = TariffPeriod(
    effective_from=date(2025, 12, 1),
    effective_until=date(2026, 6, 1),
    jkk_rate_permille=10,
    jkm_amount=6_800,
    discount_percent=50,
    discount_excluded_funding=frozenset({FundingSource.REGIONAL_BUDGET}),
    note="50% BPU discount",
)
AFTER = TariffPeriod(
    effective_from=date(2026, 6, 1), effective_until=None, jkk_rate_permille=10, jkm_amount=6_800
)
WITH_DISCOUNT = TariffTable([BASE, DISCOUNT, AFTER])


def test_monthly_dues_today() -> None:
    dues = DEFAULT_TARIFF.monthly_dues(date(2026, 3, 1))
    assert dues == DuesBreakdown(month=date(2026, 3, 1), jkk=10_000, jkm=6_800)
    assert dues.total == 16_800


def test_a_quarter_from_1_march_2026_costs_50_400() -> None:
    assert DEFAULT_TARIFF.plan_amount(PaymentPlan.QUARTERLY, date(2026, 3, 1)) == 50_400


@pytest.mark.parametrize("plan", [PaymentPlan.MONTHLY, PaymentPlan.PAYROLL_DEDUCTION])
def test_single_month_plans(plan: PaymentPlan) -> None:
    assert DEFAULT_TARIFF.plan_amount(plan, date(2026, 3, 1)) == 16_800


def test_any_day_of_the_month_names_the_month() -> None:
    assert DEFAULT_TARIFF.monthly_dues(date(2026, 3, 31)).month == date(2026, 3, 1)


def test_default_has_no_funding_discount() -> None:
    for funding in FundingSource:
        assert DEFAULT_TARIFF.monthly_dues(date(2026, 1, 1), funding=funding).total == 16_800


def test_discount_window_halves_dues_except_for_regional_budget() -> None:
    month = date(2026, 3, 1)
    assert WITH_DISCOUNT.monthly_dues(month).total == 8_400
    assert WITH_DISCOUNT.monthly_dues(month, funding=FundingSource.VILLAGE_FUND).total == 8_400
    regional = WITH_DISCOUNT.monthly_dues(month, funding=FundingSource.REGIONAL_BUDGET)
    assert regional.total == 16_800


def test_discount_window_edges() -> None:
    assert WITH_DISCOUNT.monthly_dues(date(2025, 11, 30)).total == 16_800
    assert WITH_DISCOUNT.monthly_dues(date(2025, 12, 1)).total == 8_400
    assert WITH_DISCOUNT.monthly_dues(date(2026, 5, 31)).total == 8_400
    assert WITH_DISCOUNT.monthly_dues(date(2026, 6, 1)).total == 16_800


def test_a_quarter_spanning_a_tariff_change_uses_each_months_tariff() -> None:
    # Apr + May discounted, Jun at full price.
    assert WITH_DISCOUNT.plan_amount(PaymentPlan.QUARTERLY, date(2026, 4, 1)) == 8_400 * 2 + 16_800
    # Oct + Nov full price, Dec discounted.
    assert WITH_DISCOUNT.dues_for_months(date(2025, 10, 1), 3) == 16_800 * 2 + 8_400


def test_jkk_follows_declared_income_and_rounds_half_up() -> None:
    assert DEFAULT_TARIFF.monthly_dues(date(2026, 3, 1), declared_income=2_000_000).jkk == 20_000
    assert DEFAULT_TARIFF.monthly_dues(date(2026, 3, 1), declared_income=1_050).jkk == 11  # 10.5
    assert DEFAULT_TARIFF.monthly_dues(date(2026, 3, 1), declared_income=1_049).jkk == 10  # 10.49


def test_discount_rounds_each_programme_half_up() -> None:
    table = TariffTable(
        [
            TariffPeriod(
                effective_from=date(2026, 1, 1),
                effective_until=None,
                jkk_rate_permille=10,
                jkm_amount=6_801,
                discount_percent=50,
            )
        ]
    )
    dues = table.monthly_dues(date(2026, 1, 1), declared_income=1_000_100)
    assert (dues.jkk, dues.jkm) == (5_001, 3_401)  # 10,001 / 2 = 5,000.5 ; 6,801 / 2 = 3,400.5


def test_negative_income_or_count_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="income"):
        DEFAULT_TARIFF.monthly_dues(date(2026, 3, 1), declared_income=-1)
    with pytest.raises(ValueError, match="count"):
        DEFAULT_TARIFF.dues_for_months(date(2026, 3, 1), -1)


def test_zero_months_cost_nothing() -> None:
    assert DEFAULT_TARIFF.dues_for_months(date(2026, 3, 1), 0) == 0


def test_month_before_every_period_has_no_tariff() -> None:
    with pytest.raises(NoTariffError, match="2015-06-01"):
        DEFAULT_TARIFF.monthly_dues(date(2015, 6, 30))


def test_gap_between_periods_has_no_tariff() -> None:
    table = TariffTable([BASE, AFTER])
    with pytest.raises(NoTariffError):
        table.monthly_dues(date(2026, 1, 1))
    with pytest.raises(NoTariffError):
        table.dues_for_months(date(2025, 11, 1), 2)


def test_overlapping_periods_are_refused_naming_both() -> None:
    overlapping = TariffPeriod(
        effective_from=date(2026, 5, 1), effective_until=None, jkk_rate_permille=10, jkm_amount=1
    )
    with pytest.raises(TariffTableError, match=r"2025-12-01\.\.2026-06-01.*2026-05-01\.\.open"):
        TariffTable([overlapping, BASE, DISCOUNT])


def test_open_ended_period_followed_by_another_is_refused() -> None:
    with pytest.raises(TariffTableError, match="overlap"):
        TariffTable([AFTER, TariffPeriod(date(2027, 1, 1), None, 10, 6_800)])


def test_periods_are_kept_oldest_first() -> None:
    assert TariffTable([AFTER, BASE, DISCOUNT]).periods == (BASE, DISCOUNT, AFTER)


@pytest.mark.parametrize(
    ("period", "message"),
    [
        (TariffPeriod(date(2026, 1, 2), None, 10, 6_800), "first of a month"),
        (TariffPeriod(date(2026, 1, 1), date(2026, 2, 2), 10, 6_800), "first of a month"),
        (TariffPeriod(date(2026, 1, 1), date(2026, 1, 1), 10, 6_800), "after effective_from"),
        (TariffPeriod(date(2026, 1, 1), None, -1, 6_800), "negative"),
        (TariffPeriod(date(2026, 1, 1), None, 10, 6_800, discount_percent=101), "0..100"),
    ],
)
def test_inconsistent_periods_are_refused(period: TariffPeriod, message: str) -> None:
    with pytest.raises(TariffTableError, match=message):
        TariffTable([period])


def test_empty_table_is_refused() -> None:
    with pytest.raises(TariffTableError, match="at least one"):
        TariffTable([])


months = st.dates(min_value=date(2015, 7, 1), max_value=date(2030, 12, 31))
fundings = st.sampled_from(FundingSource)
incomes = st.integers(0, 20_000_000)


@given(first=months, count=st.integers(0, 24), funding=fundings, income=incomes)
def test_dues_for_months_is_the_sum_of_monthly_dues(
    first: date, count: int, funding: FundingSource, income: int
) -> None:
    expected = sum(
        WITH_DISCOUNT.monthly_dues(
            add_months(first, offset), funding=funding, declared_income=income
        ).total
        for offset in range(count)
    )
    assert (
        WITH_DISCOUNT.dues_for_months(first, count, funding=funding, declared_income=income)
        == expected
    )


@given(month=months, funding=fundings, income=incomes)
def test_discount_never_raises_dues_and_exclusion_pays_full(
    month: date, funding: FundingSource, income: int
) -> None:
    full = DEFAULT_TARIFF.monthly_dues(month, funding=funding, declared_income=income)
    discounted = WITH_DISCOUNT.monthly_dues(month, funding=funding, declared_income=income)
    assert discounted.total <= full.total
    if funding is FundingSource.REGIONAL_BUDGET or not DISCOUNT.covers(month):
        assert discounted == full


@given(month=months, low=incomes, high=incomes)
def test_higher_income_never_lowers_jkk(month: date, low: int, high: int) -> None:
    low, high = sorted((low, high))
    assert (
        DEFAULT_TARIFF.monthly_dues(month, declared_income=low).jkk
        <= DEFAULT_TARIFF.monthly_dues(month, declared_income=high).jkk
    )


def test_lowest_bracket_is_one_million() -> None:
    assert LOWEST_INCOME_BRACKET == 1_000_000
    assert DEFAULT_TARIFF.monthly_dues(date(2026, 3, 1)).jkk == 10_000


HEADER = (
    "effective_from,effective_until,jkk_per_mille,jkm,discount_percent,"
    "discount_excluded_funding,note\n"
)
WINDOW_FILE = (
    "# BPU tariff with a discount window\n"
    + HEADER
    + "2015-07-01,2025-12-01,10,6800,0,,PP 44/2015\n"
    + "\n"
    + "2025-12-01,2026-06-01,10,6800,50,regional_budget,50% BPU discount\n"
    + "2026-06-01,,10,6800,,,\n"
)


def test_shipped_file_is_the_default_tariff() -> None:
    assert load_tariff(SHIPPED_TARIFF).periods == DEFAULT_TARIFF.periods


def test_shipped_file_quarter_from_march_2026() -> None:
    assert (
        load_tariff(SHIPPED_TARIFF).plan_amount(PaymentPlan.QUARTERLY, date(2026, 3, 1)) == 50_400
    )


def test_file_with_a_discount_window_reads_every_column() -> None:
    table = parse_tariff(WINDOW_FILE)
    assert table.periods == (
        BASE,
        DISCOUNT,
        TariffPeriod(date(2026, 6, 1), None, 10, 6_800),
    )
    assert table.monthly_dues(date(2026, 1, 1)).total == 8_400
    assert table.monthly_dues(date(2026, 1, 1), funding=FundingSource.REGIONAL_BUDGET).total == (
        16_800
    )


def test_file_read_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "tariff.csv"
    path.write_text("\ufeff" + WINDOW_FILE, encoding="utf-8")
    assert load_tariff(path).periods == parse_tariff(WINDOW_FILE).periods


def test_columns_in_any_order_optional_ones_may_be_left_out() -> None:
    table = parse_tariff(
        "JKM,Effective_From,jkk_per_mille,effective_until,source\n6800,2015-07-01,10,,x\n"
    )
    assert table.periods == (TariffPeriod(date(2015, 7, 1), None, 10, 6_800),)


def test_several_excluded_fundings() -> None:
    table = parse_tariff(HEADER + "2025-12-01,,10,6800,50,regional_budget; village_fund,\n")
    assert table.periods[0].discount_excluded_funding == frozenset(
        {FundingSource.REGIONAL_BUDGET, FundingSource.VILLAGE_FUND}
    )


def test_overlap_is_refused_naming_the_later_row_and_the_earlier_one() -> None:
    text = (
        HEADER
        + "2015-07-01,,10,6800,0,,PP 44/2015\n"
        + "# the administrator forgot to close the row above\n"
        + "2025-12-01,2026-06-01,10,6800,50,regional_budget,discount\n"
    )
    with pytest.raises(TariffFileError, match="overlaps") as raised:
        parse_tariff(text)
    assert raised.value.line == 4
    assert str(raised.value).startswith("line 4: ")
    assert "line 2" in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_overlap_found_when_rows_are_out_of_date_order() -> None:
    text = (
        HEADER
        + "2026-06-01,,10,6800,,,\n"
        + "2015-07-01,2025-12-01,10,6800,,,\n"
        + "2025-12-01,2026-07-01,10,6800,50,,\n"
    )
    with pytest.raises(TariffFileError) as raised:
        parse_tariff(text)
    assert raised.value.line == 4


def test_touching_periods_do_not_overlap() -> None:
    text = HEADER + "2026-01-01,2026-02-01,10,6800,,,\n2026-02-01,2026-03-01,10,6800,,,\n"
    assert len(parse_tariff(text).periods) == 2


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2015-13-01,,10,6800,,,", "effective_from '2015-13-01' is not a date"),
        ("2015-07-01,someday,10,6800,,,", "effective_until 'someday' is not a date"),
        ("2015-07-01,,1%,6800,,,", "jkk_per_mille '1%' is not a whole number"),
        ("2015-07-01,,10,6.800,,,", "jkm '6.800' is not a whole number"),
        ("2015-07-01,,10,6800,half,,", "discount_percent 'half' is not a whole number"),
        ("2015-07-01,,10,6800,50,apbd,", "'apbd' is not one of"),
        ("2015-07-15,,10,6800,,,", "first of a month"),
        ("2015-07-01,2015-07-01,10,6800,,,", "after effective_from"),
        ("2015-07-01,,10,-1,,,", "negative"),
        ("2015-07-01,,10,6800,150,,", "0..100"),
        ("2015-07-01", "jkk_per_mille is missing"),
        (",,10,6800,,,", "effective_from is missing"),
    ],
)
def test_bad_rows_are_refused_with_their_line(row: str, message: str) -> None:
    with pytest.raises(TariffFileError, match=message) as raised:
        parse_tariff("# comment\n" + HEADER + "2000-01-01,2001-01-01,10,6800,,,\n" + row + "\n")
    assert raised.value.line == 4


def test_header_without_a_needed_column_is_refused() -> None:
    with pytest.raises(TariffFileError, match="jkm") as raised:
        parse_tariff("# tariff\neffective_from,effective_until,jkk_per_mille\n2015-07-01,,10\n")
    assert raised.value.line == 2


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", HEADER, HEADER + "# no rows\n"])
def test_file_without_rows_is_refused(text: str) -> None:
    with pytest.raises(TariffFileError) as raised:
        parse_tariff(text)
    assert raised.value.line is None
