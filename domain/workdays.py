"""Working days of Indonesian government offices: Monday to Friday, minus the
national public holidays and collective leave (cuti bersama).

Which days are holidays is data, not code: the government fixes them each year
in a joint decree of three ministers (SKB 3 Menteri), and moves them now and
then. The list ships as `sertakan_data/holidays_id.csv` (`date,name`, lines starting with
"#" are comments) and is read once at start-up with `load_holidays`. Used for
the PIC digest (sent on working days) and for due dates that fall on a day off
(the 15th moves to the next working day).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

# A calendar in which no working day follows within this many days is broken
# (every day a holiday), not a long weekend: stop instead of looping forever.
_MAX_DAYS_OFF_IN_A_ROW = 366
_SATURDAY = 5


class HolidayFileError(ValueError):
    """The holiday list cannot be read; `line` is the 1-based line at fault."""

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


class WorkCalendar:
    """Which days offices work: Monday to Friday and not a listed holiday."""

    __slots__ = ("_holidays", "_years")

    def __init__(self, holidays: Iterable[date]) -> None:
        self._holidays = frozenset(holidays)
        self._years = frozenset(day.year for day in self._holidays)

    @property
    def holidays(self) -> frozenset[date]:
        return self._holidays

    def covers(self, year: int) -> bool:
        """True when the list has at least one holiday in `year`.

        False means the year's decree was not loaded yet: every weekday of that
        year counts as a working day, which is worth a warning at start-up.
        """
        return year in self._years

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < _SATURDAY and day not in self._holidays

    def next_working_day(self, day: date) -> date:
        """`day` itself when it is a working day, otherwise the first working day after it.

        Raises ValueError when no working day follows within a year (a broken list).
        """
        candidate = day
        for _ in range(_MAX_DAYS_OFF_IN_A_ROW):
            if self.is_working_day(candidate):
                return candidate
            candidate += timedelta(days=1)
        raise ValueError(f"no working day within {_MAX_DAYS_OFF_IN_A_ROW} days of {day}")


def parse_holidays(text: str) -> WorkCalendar:
    """A calendar from the text of a holiday CSV: header `date,name`, ISO dates.

    Blank lines and lines starting with "#" are skipped; extra columns are
    ignored; a date listed twice (a holiday that is also cuti bersama) counts
    once. Raises HolidayFileError naming the line of a missing header column or
    a malformed date.
    """
    lines = [
        "" if line.lstrip().startswith("#") else line for line in text.lstrip("\ufeff").splitlines()
    ]
    reader = csv.reader(io.StringIO("\n".join(lines), newline=""))
    date_at = -1
    days: list[date] = []
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if date_at < 0:
            columns = [cell.strip().casefold() for cell in record]
            if "date" not in columns or "name" not in columns:
                raise HolidayFileError(
                    f"the header must have the columns 'date' and 'name', found {record!r}",
                    line=line,
                )
            date_at = columns.index("date")
            continue
        value = record[date_at].strip() if date_at < len(record) else ""
        try:
            days.append(date.fromisoformat(value))
        except ValueError:
            raise HolidayFileError(f"{value!r} is not a date (YYYY-MM-DD)", line=line) from None
    if date_at < 0:
        raise HolidayFileError("the file is empty; expected a header 'date,name'")
    return WorkCalendar(days)


def load_holidays(path: Path) -> WorkCalendar:
    """Read a holiday CSV (UTF-8, see `parse_holidays`); the caller's start-up does this once."""
    return parse_holidays(path.read_text(encoding="utf-8"))
