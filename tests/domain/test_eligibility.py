from __future__ import annotations

from datetime import date

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain.eligibility import AgeBounds, AgeProblem, age_on, check_age

dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [
        (date(1990, 3, 15), date(2026, 3, 14), 35),
        (date(1990, 3, 15), date(2026, 3, 15), 36),
        (date(1990, 3, 15), date(1990, 3, 15), 0),
        (date(2000, 2, 29), date(2025, 2, 28), 24),  # leap-day birthday not reached yet
        (date(2000, 2, 29), date(2025, 3, 1), 25),
        (date(2000, 2, 29), date(2028, 2, 29), 28),
        (date(2000, 2, 29), date(2028, 2, 28), 27),
    ],
)
def test_age_in_completed_years(birth: date, on: date, age: int) -> None:
    assert age_on(birth, on) == age


def test_default_bounds_are_15_to_65() -> None:
    assert AgeBounds() == AgeBounds(minimum=15, maximum=65)


@pytest.mark.parametrize(
    ("birth", "problem"),
    [
        (date(2011, 3, 2), AgeProblem.TOO_YOUNG),  # 15th birthday tomorrow
        (date(2011, 3, 1), None),  # 15 today
        (date(1960, 3, 2), None),  # 66th birthday tomorrow: still 65
        (date(1960, 3, 1), AgeProblem.TOO_OLD),  # 66 today
        (date(2026, 3, 2), AgeProblem.BORN_IN_FUTURE),
    ],
)
def test_default_bounds_are_inclusive(birth: date, problem: AgeProblem | None) -> None:
    assert check_age(birth, date(2026, 3, 1)) is problem


def test_configured_bounds() -> None:
    bounds = AgeBounds(minimum=18, maximum=60)
    assert check_age(date(2010, 1, 1), date(2026, 3, 1), bounds) is AgeProblem.TOO_YOUNG
    assert check_age(date(1965, 1, 1), date(2026, 3, 1), bounds) is AgeProblem.TOO_OLD
    assert check_age(date(1990, 1, 1), date(2026, 3, 1), bounds) is None


@pytest.mark.parametrize(("minimum", "maximum"), [(20, 19), (-1, 10)])
def test_inconsistent_bounds_are_refused(minimum: int, maximum: int) -> None:
    with pytest.raises(ValueError, match="minimum"):
        AgeBounds(minimum=minimum, maximum=maximum)


@given(birth=dates, first=dates, second=dates)
def test_age_never_decreases_with_time(birth: date, first: date, second: date) -> None:
    earlier, later = sorted((first, second))
    assert age_on(birth, earlier) <= age_on(birth, later)


@given(birth=dates, on=dates)
def test_age_matches_the_last_birthday(birth: date, on: date) -> None:
    assume(birth <= on)
    age = age_on(birth, on)
    assert age >= 0
    # The age changes exactly at birthdays: a year later the age is one more.
    try:
        next_year = on.replace(year=on.year + 1)
    except ValueError:  # on is 29 Feb
        return
    assert age_on(birth, next_year) == age + 1


@given(birth=dates, on=dates, low=st.integers(0, 80), span=st.integers(0, 60))
def test_check_age_agrees_with_age_on(birth: date, on: date, low: int, span: int) -> None:
    bounds = AgeBounds(minimum=low, maximum=low + span)
    problem = check_age(birth, on, bounds)
    if birth > on:
        assert problem is AgeProblem.BORN_IN_FUTURE
    else:
        age = age_on(birth, on)
        assert (problem is None) == (bounds.minimum <= age <= bounds.maximum)
        assert (problem is AgeProblem.TOO_YOUNG) == (age < bounds.minimum)
