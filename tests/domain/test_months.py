from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.months import add_months, month_start, months_between

dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))


def test_month_start() -> None:
    assert month_start(date(2026, 3, 31)) == date(2026, 3, 1)
    assert month_start(date(2026, 3, 1)) == date(2026, 3, 1)


@pytest.mark.parametrize(
    ("month", "n", "expected"),
    [
        (date(2026, 1, 1), 1, date(2026, 2, 1)),
        (date(2026, 11, 1), 2, date(2027, 1, 1)),
        (date(2026, 1, 1), -1, date(2025, 12, 1)),
        (date(2026, 1, 31), 1, date(2026, 2, 1)),  # day ignored, no 31 Feb
        (date(2026, 3, 15), 0, date(2026, 3, 1)),
        (date(2026, 3, 1), -27, date(2023, 12, 1)),
    ],
)
def test_add_months(month: date, n: int, expected: date) -> None:
    assert add_months(month, n) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (date(2026, 1, 31), date(2026, 2, 1), 1),
        (date(2026, 1, 1), date(2026, 1, 31), 0),
        (date(2025, 12, 1), date(2026, 3, 1), 3),
        (date(2026, 3, 1), date(2025, 12, 1), -3),
    ],
)
def test_months_between(a: date, b: date, expected: int) -> None:
    assert months_between(a, b) == expected


@given(month=dates, n=st.integers(-1000, 1000))
def test_add_then_measure_is_identity(month: date, n: int) -> None:
    moved = add_months(month, n)
    assert moved.day == 1
    assert months_between(month, moved) == n
    assert add_months(moved, -n) == month_start(month)


@given(a=dates, b=dates)
def test_measure_then_add_lands_on_the_other_month(a: date, b: date) -> None:
    assert add_months(a, months_between(a, b)) == month_start(b)
    assert months_between(a, b) == -months_between(b, a)


@given(a=dates, b=dates)
def test_months_between_follows_date_order(a: date, b: date) -> None:
    if month_start(a) < month_start(b):
        assert months_between(a, b) > 0
    elif month_start(a) == month_start(b):
        assert months_between(a, b) == 0
