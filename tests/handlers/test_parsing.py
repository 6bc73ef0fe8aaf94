"""Typed lists of choices: "1 3", "1,3", "Siti, Joko", matched against a question's options."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from domain.vocabulary import Channel
from handlers.parsing import (
    MAX_RECORD_ID,
    DateProblem,
    TextProblem,
    ascii_int,
    match_option,
    parse_day,
    parse_person_name,
    record_id,
    split_list,
    storable_event,
)
from handlers.types import EventKind, InboundEvent, Option

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


@pytest.mark.parametrize("typed", ["١", "３", "²", "1²", "١ ٣"])
def test_other_scripts_digits_name_no_option(typed: str) -> None:
    assert match_option(typed, OPTIONS) is None


def test_a_list_of_other_scripts_digits_is_not_a_list_of_numbers() -> None:
    assert split_list("١ ٣") == ["١ ٣"]


@pytest.mark.parametrize(
    ("text", "number"),
    [("0", 0), ("042", 42), ("²", None), ("٣", None), ("３", None), ("-1", None), ("", None),
     (" 1", None), ("1" * 19, None), ("9" * 18, 10**18 - 1)],
)  # fmt: skip
def test_ascii_int(text: str, number: int | None) -> None:
    assert ascii_int(text) == number


@pytest.mark.parametrize(
    ("text", "number"),
    [("12", 12), ("0", None), (str(MAX_RECORD_ID), MAX_RECORD_ID),
     (str(MAX_RECORD_ID + 1), None), ("12345678901234567890", None), ("²", None)],
)  # fmt: skip
def test_record_id_is_bounded_by_the_integer_column(text: str, number: int | None) -> None:
    assert record_id(text) == number


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [("07-08-1990", date(1990, 8, 7)), ("7 Agustus 1990", date(1990, 8, 7)),
     ("12/0²/1990", DateProblem.FORMAT), ("١٢-٠٥-١٩٩٠", DateProblem.FORMAT),
     ("12345678901234567890-05-1990", DateProblem.FORMAT), ("123-05-1990", DateProblem.IMPOSSIBLE),
     ("31-02-1990", DateProblem.IMPOSSIBLE), ("0-0-1990", DateProblem.IMPOSSIBLE)],
)  # fmt: skip
def test_parse_day_reads_ascii_digits_only(typed: str, parsed: date | DateProblem) -> None:
    assert parse_day(typed) == parsed


@pytest.mark.parametrize("name", ["Siti²", "Siti ½", "Joko Ⅻ"])
def test_names_with_numerals_of_any_script_are_refused(name: str) -> None:
    assert parse_person_name(name) is TextProblem.HAS_DIGITS


def _event(**fields: object) -> InboundEvent:
    return InboundEvent(
        channel=Channel.TELEGRAM,
        sender_id="1",
        update_id="1",
        kind=fields.pop("kind", EventKind.TEXT),  # type: ignore[arg-type]
        received_at=datetime(2026, 12, 1, tzinfo=UTC),
        **fields,  # type: ignore[arg-type]
    )


def test_storable_event_strips_nul_and_lone_surrogates_from_every_text_field() -> None:
    event = storable_event(
        _event(text="a\x00b", choice_id="1:\ud800x", command_args="c\x00", file_name="f\udfff.csv",
               display_name="Bu\x00di", contact_phone="08\x001")
    )  # fmt: skip
    assert (event.text, event.choice_id, event.command_args) == ("ab", "1:x", "c")
    assert (event.file_name, event.display_name, event.contact_phone) == ("f.csv", "Budi", "081")


def test_storable_event_keeps_a_clean_event_as_it_is() -> None:
    event = _event(text="Siti Aminah ٣ 😀 שלום")
    assert storable_event(event) is event


def test_storable_event_bounds_the_display_name_and_the_file_reference() -> None:
    assert storable_event(_event(display_name="x" * 500)).display_name == "x" * 200
    photo = storable_event(_event(kind=EventKind.PHOTO, file_ref="r" * 181))
    assert (photo.kind, photo.file_ref) == (EventKind.UNSUPPORTED, None)
    ok = _event(kind=EventKind.PHOTO, file_ref="r" * 180)
    assert storable_event(ok) is ok
