"""Working days: weekends and the shipped holiday list, and the list's own format."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.workdays import HolidayFileError, WorkCalendar, load_holidays, parse_holidays
from sertakan_data import HOLIDAYS, data_file

HOLIDAYS_FILE = data_file(HOLIDAYS)


@pytest.fixture(scope="module")
def shipped() -> WorkCalendar:
    return load_holidays(HOLIDAYS_FILE)


def test_weekdays_work_and_weekends_do_not() -> None:
    calendar = WorkCalendar([])
    assert calendar.is_working_day(date(2026, 11, 20))  # Friday
    assert not calendar.is_working_day(date(2026, 11, 21))  # Saturday
    assert not calendar.is_working_day(date(2026, 11, 22))  # Sunday
    assert calendar.is_working_day(date(2026, 11, 23))  # Monday


def test_a_listed_weekday_is_a_day_off() -> None:
    calendar = WorkCalendar([date(2026, 8, 17)])
    assert not calendar.is_working_day(date(2026, 8, 17))
    assert calendar.is_working_day(date(2026, 8, 18))


def test_next_working_day_is_the_day_itself_when_it_works() -> None:
    assert WorkCalendar([]).next_working_day(date(2026, 11, 16)) == date(2026, 11, 16)


def test_next_working_day_skips_a_weekend_and_a_holiday_after_it() -> None:
    # 15 August 2026 is a Saturday; Monday the 17th is Independence Day.
    calendar = WorkCalendar([date(2026, 8, 17)])
    assert calendar.next_working_day(date(2026, 8, 15)) == date(2026, 8, 18)


def test_a_calendar_without_any_working_day_fails_instead_of_looping() -> None:
    start = date(2026, 1, 1)
    every_day = [start + timedelta(days=n) for n in range(800)]
    with pytest.raises(ValueError, match="no working day"):
        WorkCalendar(every_day).next_working_day(start)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)))
def test_next_working_day_is_the_first_working_day_on_or_after(day: date) -> None:
    calendar = WorkCalendar([day, day + timedelta(days=1), day + timedelta(days=4)])
    found = calendar.next_working_day(day)
    assert found >= day
    assert calendar.is_working_day(found)
    between = (day + timedelta(days=n) for n in range((found - day).days))
    assert not any(calendar.is_working_day(other) for other in between)


def test_the_shipped_list_has_the_2026_decree(shipped: WorkCalendar) -> None:
    in_2026 = {day for day in shipped.holidays if day.year == 2026}
    # SKB 3 Menteri for 2026: 17 national holidays and 8 days of cuti bersama.
    assert len(in_2026) == 25
    assert {date(2026, 3, 20), date(2026, 3, 23), date(2026, 3, 24)} <= in_2026
    assert shipped.covers(2026)
    assert shipped.covers(2027)
    assert not shipped.covers(2028)


def test_the_15th_on_a_day_off_moves_to_the_next_working_day(shipped: WorkCalendar) -> None:
    # 15 May 2026 (Friday) is cuti bersama after Ascension Day: dues fall on Monday the 18th.
    assert shipped.next_working_day(date(2026, 5, 15)) == date(2026, 5, 18)
    # 15 March 2027 (Monday) is cuti bersama after Idul Fitri.
    assert shipped.next_working_day(date(2027, 3, 15)) == date(2027, 3, 16)
    # An ordinary 15th stays.
    assert shipped.next_working_day(date(2026, 12, 15)) == date(2026, 12, 15)


def test_the_list_skips_comments_and_extra_columns_and_repeated_dates() -> None:
    calendar = parse_holidays(
        "\ufeff# a comment\n\nname,date,kind\n"
        "Idul Fitri,2026-03-21,libur_nasional\n"
        '"Cuti bersama, Idul Fitri",2026-03-23,cuti_bersama\n'
        "# 2026-03-24 is commented out\n"
        "Twice,2026-03-23,\n"
    )
    assert calendar.holidays == {date(2026, 3, 21), date(2026, 3, 23)}


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", None, "empty"),
        ("# only a comment\n", None, "empty"),
        ("day,name\n2026-01-01,x\n", 1, "columns 'date' and 'name'"),
        ("# header follows\ndate,name\n2026-01-01,ok\n01/02/2026,bad\n", 4, "'01/02/2026'"),
        ("date,name\n2026-02-30,no such day\n", 2, "'2026-02-30'"),
        ("date,name\n,empty date\n", 2, "''"),
    ],
)
def test_a_bad_list_names_the_line(text: str, line: int | None, reason: str) -> None:
    with pytest.raises(HolidayFileError, match=reason) as caught:
        parse_holidays(text)
    assert caught.value.line == line
