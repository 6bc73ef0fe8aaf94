from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.nip import Nip, NipError, NipProblem, parse_nip
from domain.vocabulary import EmploymentType, Sex

SEX_DIGIT = {Sex.MALE: "1", Sex.FEMALE: "2"}


def pns_nip(birth: date, start_year: int, start_month: int, sex: Sex, serial: str = "001") -> str:
    return f"{birth:%Y%m%d}{start_year:04d}{start_month:02d}{SEX_DIGIT[sex]}{serial}"


def pppk_nip(birth: date, start_year: int, intake_round: int, sex: Sex, serial: str = "001") -> str:
    return f"{birth:%Y%m%d}{start_year:04d}2{intake_round}{SEX_DIGIT[sex]}{serial}"


def error(problem: NipProblem, length: int = 18) -> NipError:
    return NipError(problem, length)


def test_pns_fields() -> None:
    assert parse_nip("198507172010012003") == Nip(
        value="198507172010012003",
        employment_type=EmploymentType.PNS,
        birth_date=date(1985, 7, 17),
        sex=Sex.FEMALE,
        service_start_year=2010,
        service_start_month=1,
        pppk_intake_round=None,
        serial="003",
    )


def test_pns_start_month_from_october_has_a_1_at_index_12() -> None:
    result = parse_nip("198507172010121003")
    assert isinstance(result, Nip)
    assert (result.employment_type, result.service_start_month) == (EmploymentType.PNS, 12)


def test_pppk_fields() -> None:
    assert parse_nip("199203042022211005") == Nip(
        value="199203042022211005",
        employment_type=EmploymentType.PPPK,
        birth_date=date(1992, 3, 4),
        sex=Sex.MALE,
        service_start_year=2022,
        service_start_month=None,
        pppk_intake_round=1,
        serial="005",
    )


@pytest.mark.parametrize(
    "text", ["1985 0717 201001 2 003", "19850717.201001.2.003", "19850717-201001-2-003"]
)
def test_separators_are_removed(text: str) -> None:
    result = parse_nip(text)
    assert isinstance(result, Nip)
    assert result.value == "198507172010012003"


@pytest.mark.parametrize("text", ["", "  ", "-"])
def test_empty(text: str) -> None:
    assert parse_nip(text) == error(NipProblem.EMPTY, 0)


def test_not_digits_reports_digits_found() -> None:
    assert parse_nip("NIP 198507172010012003") == error(NipProblem.NOT_DIGITS, 18)
    assert parse_nip("19850717201001200x") == error(NipProblem.NOT_DIGITS, 17)


@pytest.mark.parametrize("text", ["19850717201001200", "1985071720100120031", "3201010101900001"])
def test_wrong_length(text: str) -> None:
    assert parse_nip(text) == error(NipProblem.WRONG_LENGTH, len(text))


@pytest.mark.parametrize(
    "text",
    [
        "198502302010012003",  # 30 Feb
        "198513012010012003",  # month 13
        "198500102010012003",  # month 00
        "198507002010012003",  # day 00
        "198502292010012003",  # 29 Feb in a year that is not leap
    ],
)
def test_impossible_birth_date(text: str) -> None:
    assert parse_nip(text) == error(NipProblem.IMPOSSIBLE_BIRTH_DATE)


@pytest.mark.parametrize(
    "text",
    [
        "198507172010002003",  # PNS month 00
        "198507172010132003",  # PNS month 13
        "198507172010312003",  # index 12 is neither 0/1 (PNS) nor 2 (PPPK)
        "198507171999012003",  # PNS start at 14 years
        "198507172056012003",  # PNS start at 71 years
        "198507171999211003",  # PPPK start at 14 years
        "198507172056211003",  # PPPK start at 71 years
    ],
)
def test_impossible_start(text: str) -> None:
    assert parse_nip(text) == error(NipProblem.IMPOSSIBLE_START)


@pytest.mark.parametrize("text", ["198507172000011003", "198507172055121003"])
def test_start_years_at_the_bounds_are_accepted(text: str) -> None:
    assert isinstance(parse_nip(text), Nip)


@pytest.mark.parametrize("text", ["198507172010010003", "198507172010013003", "198507172022219003"])
def test_bad_sex_digit(text: str) -> None:
    assert parse_nip(text) == error(NipProblem.BAD_SEX_DIGIT)


def test_birth_date_is_checked_before_start_and_sex() -> None:
    assert parse_nip("198502302010139003") == error(NipProblem.IMPOSSIBLE_BIRTH_DATE)
    assert parse_nip("198507172010139003") == error(NipProblem.IMPOSSIBLE_START)


births = st.dates(min_value=date(1940, 1, 1), max_value=date(2010, 12, 31))
serials = st.from_regex(r"[0-9]{3}", fullmatch=True)


@given(
    birth=births,
    start_age=st.integers(15, 70),
    start_month=st.integers(1, 12),
    sex=st.sampled_from(Sex),
    serial=serials,
)
def test_pns_round_trip(
    birth: date, start_age: int, start_month: int, sex: Sex, serial: str
) -> None:
    text = pns_nip(birth, birth.year + start_age, start_month, sex, serial)
    assert parse_nip(text) == Nip(
        value=text,
        employment_type=EmploymentType.PNS,
        birth_date=birth,
        sex=sex,
        service_start_year=birth.year + start_age,
        service_start_month=start_month,
        pppk_intake_round=None,
        serial=serial,
    )


@given(
    birth=births,
    start_age=st.integers(15, 70),
    intake_round=st.integers(0, 9),
    sex=st.sampled_from(Sex),
    serial=serials,
)
def test_pppk_round_trip(
    birth: date, start_age: int, intake_round: int, sex: Sex, serial: str
) -> None:
    text = pppk_nip(birth, birth.year + start_age, intake_round, sex, serial)
    assert parse_nip(text) == Nip(
        value=text,
        employment_type=EmploymentType.PPPK,
        birth_date=birth,
        sex=sex,
        service_start_year=birth.year + start_age,
        service_start_month=None,
        pppk_intake_round=intake_round,
        serial=serial,
    )


@given(st.from_regex(r"[0-9]{1,40}", fullmatch=True).filter(lambda s: len(s) != 18))
def test_any_digit_string_not_18_long_is_wrong_length(text: str) -> None:
    assert parse_nip(text) == error(NipProblem.WRONG_LENGTH, len(text))


@given(st.from_regex(r"[0-9]{18}", fullmatch=True))
def test_any_18_digits_parse_or_name_a_layout_problem(text: str) -> None:
    result = parse_nip(text)
    if isinstance(result, Nip):
        assert result.value == text
        assert result.sex is (Sex.MALE if text[14] == "1" else Sex.FEMALE)
        assert (result.employment_type is EmploymentType.PPPK) == (text[12] == "2")
    else:
        assert result.problem in {
            NipProblem.IMPOSSIBLE_BIRTH_DATE,
            NipProblem.IMPOSSIBLE_START,
            NipProblem.BAD_SEX_DIGIT,
        }
