"""Typed lists of choices: "1 3", "1,3", "Siti, Joko", matched against a question's options."""

from __future__ import annotations

import pytest

from handlers.parsing import match_option, split_list
from handlers.types import Option

OPTIONS = (
    Option("7:11", "Siti Aminah – KPJ 90000000000"),
    Option("7:12", "Joko Susilo – KPJ 90000000001"),
    Option("7:all", "👥 Semua pekerja (2)"),
)


@pytest.mark.parametrize(
    ("typed", "items"),
    [
        ("1 3", ["1", "3"]),
        ("1,3", ["1", "3"]),
        (" 1 ; 2. ", ["1", "2"]),
        ("1 dan 2", ["1", "2"]),
        ("Siti, Joko", ["Siti", "Joko"]),
        ("siti dan joko susilo", ["siti", "joko susilo"]),
        ("Siti & Joko", ["Siti", "Joko"]),
        ("Siti Aminah", ["Siti Aminah"]),  # a name's own space does not split it
        ("semua", ["semua"]),
    ],
)
def test_split_list(typed: str, items: list[str]) -> None:
    assert split_list(typed) == items


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("2", "12"),
        ("joko", "12"),  # the first words of one label
        ("Siti Aminah – KPJ 90000000000", "11"),  # the whole label
        ("semua", "all"),  # the emoji is not part of the words
        ("4", None),
        ("budi", None),
    ],
)
def test_match_option(typed: str, key: str | None) -> None:
    assert match_option(typed, OPTIONS) == key


def test_numbers_as_values_are_not_positions() -> None:
    assert match_option("2", OPTIONS, by_position=False) is None
