from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.nik import Nik, NikError, NikProblem, mask_nik, parse_nik
from domain.vocabulary import Sex

TODAY = date(2026, 3, 1)


def build_nik(birth: date, sex: Sex, region: str = "320101", serial: str = "0001") -> str:
    day = birth.day + (40 if sex is Sex.FEMALE else 0)
    return f"{region}{day:02d}{birth.month:02d}{birth.year % 100:02d}{serial}"


def parsed(text: str, today: date = TODAY) -> Nik:
    result = parse_nik(text, today=today)
    assert isinstance(result, Nik), result
    return result


def test_parses_every_field_of_a_male_nik() -> None:
    nik = parsed("3201021503900042")
    assert nik == Nik(
        value="3201021503900042",
        province_code="32",
        regency_code="01",
        district_code="02",
        birth_date=date(1990, 3, 15),
        sex=Sex.MALE,
        serial="0042",
    )


def test_women_have_forty_added_to_the_day() -> None:
    nik = parsed("3201025503900042")
    assert nik.birth_date == date(1990, 3, 15)
    assert nik.sex is Sex.FEMALE


@pytest.mark.parametrize(("encoded_day", "sex"), [("01", Sex.MALE), ("31", Sex.MALE)])
def test_male_day_bounds(encoded_day: str, sex: Sex) -> None:
    assert parsed(f"320101{encoded_day}0190 0001").sex is sex


@pytest.mark.parametrize(("encoded_day", "day"), [("41", 1), ("71", 31)])
def test_female_day_bounds(encoded_day: str, day: int) -> None:
    nik = parsed(f"320101{encoded_day}0190 0001")
    assert (nik.sex, nik.birth_date.day) == (Sex.FEMALE, day)


@pytest.mark.parametrize(
    "text",
    [
        "3201010001900001",  # day 00
        "3201013201900001",  # day 32
        "3201014001900001",  # day 40: neither male nor female
        "3201017201900001",  # female day 32
        "3201019901900001",
        "3201011500900001",  # month 00
        "3201011513900001",  # month 13
        "3201013102900001",  # 31 Feb
        "3201017102900001",  # 31 Feb, female
        "3201013104900001",  # 31 Apr
        "3201012902990001",  # 29 Feb 1999 (and 1899, ...): never a leap year ending in 99
    ],
)
def test_impossible_dates_are_refused(text: str) -> None:
    assert parse_nik(text, today=TODAY) == NikError(NikProblem.IMPOSSIBLE_DATE, 16)


def test_29_february_in_a_leap_year_is_accepted() -> None:
    assert parsed("3201016902000001").birth_date == date(2000, 2, 29)


def test_29_february_00_skips_a_century_year_that_is_not_leap() -> None:
    assert parsed("3201012902000001", today=date(2101, 1, 1)).birth_date == date(2000, 2, 29)


def test_29_february_00_with_no_leap_year_in_two_centuries_is_impossible() -> None:
    # 1900 was not a leap year and 2000-02-29 is after today.
    result = parse_nik("3201012902000001", today=date(2000, 2, 1))
    assert result == NikError(NikProblem.IMPOSSIBLE_DATE, 16)


@pytest.mark.parametrize(
    ("yy_text", "expected_year"),
    [
        ("010190", 1990),
        ("010126", 2026),  # same yy, date already reached
        ("020326", 1926),  # same yy, later in the year than today
        ("010325", 2025),
        ("010327", 1927),  # yy after today's yy
        ("010100", 2000),
    ],
)
def test_century_is_the_most_recent_not_after_today(yy_text: str, expected_year: int) -> None:
    assert parsed(f"320101{yy_text}0001").birth_date.year == expected_year


def test_born_today_is_this_century() -> None:
    assert parsed("3201010103260001").birth_date == TODAY


@pytest.mark.parametrize(
    "text",
    [
        " 3201010101900001 ",
        "3201 0101 0190 0001",
        "3201.0101.0190.0001",
        "3201-0101-0190-0001",
        "32.01.01-010190 0001",
        "3201\t0101\u00a00190\n0001",
    ],
)
def test_separators_are_removed(text: str) -> None:
    assert parsed(text).value == "3201010101900001"


@pytest.mark.parametrize("text", ["", "   ", " - . "])
def test_empty(text: str) -> None:
    assert parse_nik(text, today=TODAY) == NikError(NikProblem.EMPTY, 0)


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("3201O10101900001", 15),  # letter O instead of zero
        ("NIK 3201010101900001", 16),
        ("3201/0101/0190/0001", 16),
        ("３２０１０１０１０１９００００１", 0),  # full-width digits are not 0-9
    ],
)
def test_not_digits_reports_digits_found(text: str, digits: int) -> None:
    assert parse_nik(text, today=TODAY) == NikError(NikProblem.NOT_DIGITS, digits)


@pytest.mark.parametrize("text", ["320101010190001", "32010101019000011", "1"])
def test_wrong_length_reports_digits_found(text: str) -> None:
    assert parse_nik(text, today=TODAY) == NikError(NikProblem.WRONG_LENGTH, len(text))


def test_unknown_region_and_serial_0000_are_accepted() -> None:
    nik = parsed("9999990101900000")
    assert (nik.province_code, nik.regency_code, nik.district_code) == ("99", "99", "99")
    assert nik.serial == "0000"


def test_masking() -> None:
    assert parsed("3201010101900001").masked == "3201********0001"
    assert mask_nik("3201010101900001") == "3201********0001"


@pytest.mark.parametrize("value", ["", "12345", "32010101019000011"])
def test_mask_hides_everything_that_is_not_16_characters(value: str) -> None:
    assert mask_nik(value) == "*" * len(value)


@given(
    birth=st.dates(
        min_value=TODAY.replace(year=TODAY.year - 100) + timedelta(days=1), max_value=TODAY
    ),
    sex=st.sampled_from(Sex),
    region=st.from_regex(r"[0-9]{6}", fullmatch=True),
    serial=st.from_regex(r"[0-9]{4}", fullmatch=True),
)
def test_round_trip_within_the_last_hundred_years(
    birth: date, sex: Sex, region: str, serial: str
) -> None:
    nik = parsed(build_nik(birth, sex, region, serial))
    assert (nik.birth_date, nik.sex, nik.serial) == (birth, sex, serial)


@given(
    birth=st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)),
    today=st.dates(min_value=date(1950, 1, 1), max_value=date(2100, 12, 31)),
    sex=st.sampled_from(Sex),
)
def test_birth_date_is_never_after_today_nor_a_century_before(
    birth: date, today: date, sex: Sex
) -> None:
    result = parse_nik(build_nik(birth, sex), today=today)
    is_leap_day = (birth.month, birth.day) == (2, 29)
    if isinstance(result, NikError):
        # Only 29 Feb can miss in both centuries (a century year that is not leap).
        assert is_leap_day
        assert result.problem is NikProblem.IMPOSSIBLE_DATE
        return
    assert result.birth_date <= today
    assert result.birth_date.year % 100 == birth.year % 100
    assert (result.birth_date.month, result.birth_date.day) == (birth.month, birth.day)
    assert today.year - result.birth_date.year <= (200 if is_leap_day else 100)


@given(st.from_regex(r"[0-9]{0,40}", fullmatch=True).filter(lambda s: len(s) not in (0, 16)))
def test_any_digit_string_not_16_long_is_wrong_length(text: str) -> None:
    assert parse_nik(text, today=TODAY) == NikError(NikProblem.WRONG_LENGTH, len(text))


@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    assert isinstance(parse_nik(text, today=TODAY), Nik | NikError)
