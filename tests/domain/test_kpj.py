from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.kpj import KPJ_DIGITS, KpjProblem, parse_kpj


def test_eleven_digits_are_a_kpj() -> None:
    assert parse_kpj("21012345678") == "21012345678"


@pytest.mark.parametrize(
    "typed",
    ["21 012 345 678", "21.012.345.678", "21-012-345-678", "  21012345678\t", "2101 2345-678"],
)
def test_spaces_dots_and_dashes_are_ignored(typed: str) -> None:
    assert parse_kpj(typed) == "21012345678"


@pytest.mark.parametrize("typed", ["", "   ", " - . "])
def test_nothing_but_separators_is_empty(typed: str) -> None:
    assert parse_kpj(typed) is KpjProblem.EMPTY


@pytest.mark.parametrize(
    "typed",
    [
        "2101234567O",  # letter O
        "KPJ21012345678",
        "2.10123E+10",  # a spreadsheet's scientific notation: digits already lost
        "２１０１２３４５６７８",  # full-width digits
        "21012345678/1",
    ],
)
def test_anything_but_ascii_digits_is_refused(typed: str) -> None:
    assert parse_kpj(typed) is KpjProblem.NON_DIGIT


@pytest.mark.parametrize("typed", ["2101234567", "210123456789", "0"])
def test_other_lengths_are_refused(typed: str) -> None:
    assert parse_kpj(typed) is KpjProblem.LENGTH


@given(st.text(alphabet="0123456789", min_size=KPJ_DIGITS, max_size=KPJ_DIGITS))
def test_every_eleven_digit_string_round_trips(digits: str) -> None:
    assert parse_kpj(digits) == digits


@given(st.text(alphabet="0123456789", max_size=30).filter(lambda d: len(d) != KPJ_DIGITS))
def test_no_other_digit_string_is_accepted(digits: str) -> None:
    assert parse_kpj(digits) in (KpjProblem.EMPTY, KpjProblem.LENGTH)


@given(st.text())
def test_the_result_is_always_eleven_ascii_digits_or_a_problem(text: str) -> None:
    result = parse_kpj(text)
    if not isinstance(result, KpjProblem):
        assert len(result) == KPJ_DIGITS
        assert set(result) <= set("0123456789")
