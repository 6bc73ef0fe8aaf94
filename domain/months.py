"""Calendar months as `date` values on the first of the month.

Every function here accepts any day of a month and ignores it.
"""

from __future__ import annotations

from datetime import date


def month_start(d: date) -> date:
    """The first day of the month `d` falls in."""
    return d.replace(day=1)


def add_months(month: date, n: int) -> date:
    """The first of the month `n` months after `month` (`n` may be negative).

    Raises ValueError outside the years 1..9999, as `date` does.
    """
    index = month.year * 12 + (month.month - 1) + n
    year, month_zero_based = divmod(index, 12)
    return date(year, month_zero_based + 1, 1)


def months_between(a: date, b: date) -> int:
    """Whole calendar months from `a`'s month to `b`'s month: positive when `b` is later.

    Days are ignored, so 31 Jan to 1 Feb is 1 and 1 Jan to 31 Jan is 0.
    """
    return (b.year - a.year) * 12 + (b.month - a.month)
