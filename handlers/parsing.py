"""Parsing of typed answers that are not program rules: names, places, dates, numbers.

Digits are ASCII 0-9 only. Python's `str.isdigit()` and `\\d` also accept "²",
"٣" or "３", which `int()` then refuses or reads as another number; every number
a person types or a button carries goes through `ascii_int` / `record_id` here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from datetime import date
from enum import StrEnum

from domain.vocabulary import OCCUPATION_TEXT_MAX
from handlers.types import MAX_FILE_REF_LENGTH, EventKind, InboundEvent, Option

NAME_MAX = 100
PLACE_MAX = 80
#: The largest id a button may name: record ids are PostgreSQL INTEGER columns.
MAX_RECORD_ID = 2**31 - 1
#: Longest display name kept (`channel_account.display_name` is 200 characters).
DISPLAY_NAME_MAX = 200

_SPACES = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
#: Between the items of a typed list: "1 3", "1,3", "Siti, Joko", "Siti dan Joko".
_NUMBER_LIST = re.compile(r"^[0-9\s,;.&+/]+$")
_LIST_SEPARATOR = re.compile(r"\s*(?:[,;&+/]|\s(?:dan|and)\s)\s*", re.IGNORECASE)
_NAME_ALLOWED = re.compile(r"^[^\W\d_]+(?:[ '.,\-][^\W\d_]*)*\.?$", re.UNICODE)
#: What PostgreSQL text (and UTF-8) cannot hold: NUL and lone surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_MONTHS = {
    # Indonesian and English month names and common abbreviations.
    **{m: i for i, m in enumerate(
        ["januari", "februari", "maret", "april", "mei", "juni", "juli", "agustus",
         "september", "oktober", "november", "desember"], start=1)},
    **{m: i for i, m in enumerate(
        ["january", "february", "march", "april", "may", "june", "july", "august",
         "september", "october", "november", "december"], start=1)},
    **{m: i for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "mei", "jun", "jul", "agu", "sep", "okt", "nov", "des"],
        start=1)},
    "agt": 8, "aug": 8, "oct": 10, "dec": 12, "may": 5,
}  # fmt: skip


class TextProblem(StrEnum):
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    HAS_DIGITS = "has_digits"
    BAD_CHARACTERS = "bad_characters"
    NO_LETTERS = "no_letters"


class DateProblem(StrEnum):
    FORMAT = "format"
    IMPOSSIBLE = "impossible"


def ascii_int(text: str, *, max_digits: int = 18) -> int | None:
    """`text` as a number when it is 1 to `max_digits` ASCII digits 0-9, else None.

    No sign, no spaces, no other script's digits; the bound keeps `int()` away from
    numbers no question asks for (and from Python's 4,300-digit limit).
    """
    if not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def record_id(text: str) -> int | None:
    """A record id carried by button data ("g:fix:12" -> 12), or None when the text
    cannot name a record: not ASCII digits, zero, or beyond `MAX_RECORD_ID` (so a
    forged 20-digit id is "not found" instead of overflowing the database's INTEGER)."""
    number = ascii_int(text, max_digits=len(str(MAX_RECORD_ID)))
    return number if number is not None and 1 <= number <= MAX_RECORD_ID else None


def storable(text: str) -> str:
    """`text` without the characters a database text column cannot hold (NUL and lone
    surrogates, which PostgreSQL and UTF-8 refuse); everything else is kept."""
    return _UNSTORABLE.sub("", text)


def storable_event(event: InboundEvent) -> InboundEvent:
    """The event with every text field `storable`, the display name cut to
    `DISPLAY_NAME_MAX`, and a file reference too long to be real (over
    `MAX_FILE_REF_LENGTH`) read as an unsupported message.

    Called once where the engine receives an event, so no step, flow or query ever
    sees a character the database refuses.
    """
    changes: dict[str, object] = {}
    for field in _EVENT_TEXT_FIELDS:
        value = getattr(event, field)
        if value is not None and _UNSTORABLE.search(value):
            changes[field] = storable(value)
    name = changes.get("display_name", event.display_name)
    if isinstance(name, str) and len(name) > DISPLAY_NAME_MAX:
        changes["display_name"] = name[:DISPLAY_NAME_MAX]
    ref = changes.get("file_ref", event.file_ref)
    if isinstance(ref, str) and len(ref) > MAX_FILE_REF_LENGTH:
        changes.update(kind=EventKind.UNSUPPORTED, file_ref=None, file_content=None)
    return dataclasses.replace(event, **changes) if changes else event  # type: ignore[arg-type]


_EVENT_TEXT_FIELDS = tuple(
    field.name for field in dataclasses.fields(InboundEvent) if field.type in ("str | None", "str")
)


def clean_spaces(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def parse_person_name(text: str) -> str | TextProblem:
    """A name as on the KTP: letters with spaces, apostrophes, dots, commas, hyphens."""
    name = clean_spaces(text)
    if len(name) < 2:
        return TextProblem.TOO_SHORT
    if len(name) > NAME_MAX:
        return TextProblem.TOO_LONG
    if any(ch.isnumeric() for ch in name):  # also "²", "½", "Ⅻ", not only 0-9
        return TextProblem.HAS_DIGITS
    if not _NAME_ALLOWED.match(name):
        return TextProblem.BAD_CHARACTERS
    return name


def _short_text(text: str, minimum: int, maximum: int) -> str | TextProblem:
    """Spaces collapsed; `minimum`-`maximum` characters with at least one letter."""
    cleaned = clean_spaces(text)
    if len(cleaned) < minimum:
        return TextProblem.TOO_SHORT
    if len(cleaned) > maximum:
        return TextProblem.TOO_LONG
    if not any(ch.isalpha() for ch in cleaned):
        return TextProblem.NO_LETTERS
    return cleaned


def parse_place(text: str) -> str | TextProblem:
    """A village or district name: 2-80 characters with at least one letter."""
    return _short_text(text, 2, PLACE_MAX)


#: Longest street line kept (street, house number, RT/RW, hamlet).
STREET_MAX = 160


def parse_occupation(text: str) -> str | TextProblem:
    """An occupation typed after "other": 3-60 characters with at least one letter."""
    return _short_text(text, 3, OCCUPATION_TEXT_MAX)


def parse_street(text: str) -> str | TextProblem:
    """A street line ("Jl. Melati No. 5 RT 02/RW 01"): 3-160 characters with a letter."""
    return _short_text(text, 3, STREET_MAX)


def parse_day(text: str) -> date | DateProblem:
    """A typed date: 12-05-1980, 12/05/1980, 12.05.1980, 12 05 1980, 12 Mei 1980, 12 May 1980."""
    parts = [p for p in re.split(r"[\s/.\-,]+", text.strip().casefold()) if p]
    if len(parts) != 3:
        return DateProblem.FORMAT
    day_s, month_s, year_s = parts
    # Nine digits: "123" is an impossible day, not a format error, and stays a C int.
    day, year = ascii_int(day_s, max_digits=9), ascii_int(year_s, max_digits=4)
    month = ascii_int(month_s, max_digits=9)
    if month is None:
        month = _MONTHS.get(month_s)
    if day is None or year is None or len(year_s) != 4 or month is None:
        return DateProblem.FORMAT
    try:
        return date(year, month, day)
    except ValueError:
        return DateProblem.IMPOSSIBLE


#: Longest free-text reason (a PIC's return reason) kept.
NOTE_MAX = 200


def parse_note(text: str) -> str | TextProblem:
    """A short free-text reason: 3-200 characters with at least one letter."""
    return _short_text(text, 3, NOTE_MAX)


def normalise(text: str) -> str:
    """Case-folded words separated by single spaces, punctuation and emoji dropped."""
    return _NON_WORD.sub(" ", text.casefold()).strip()


def match_option(text: str, options: Sequence[Option], *, by_position: bool = True) -> str | None:
    """The key of the option the typed text names (the id after its "<version>:").

    Accepted: the option's number (unless not `by_position`), its whole label,
    its key, or the first words of exactly one label ("lewati" for "Lewati
    (tidak punya HP)").
    """
    wanted = normalise(text)
    if not wanted:
        return None
    keyed = [(o.id.partition(":")[2], normalise(o.label)) for o in options]
    position = ascii_int(wanted, max_digits=3) if by_position else None
    if position is not None and 1 <= position <= len(keyed):
        return keyed[position - 1][0] or None
    for key, label in keyed:
        if key and wanted in (label, normalise(key)):
            return key
    prefixed = [key for key, label in keyed if key and label.startswith(wanted + " ")]
    return prefixed[0] if len(prefixed) == 1 else None


def split_list(text: str) -> list[str]:
    """The items of a typed list of choices, in order: "1 3" and "1, 3" give the numbers;
    "Siti, Joko" or "Siti dan Joko" the names (a name's own spaces stay inside it)."""
    if _NUMBER_LIST.match(text):
        return _ASCII_DIGITS.findall(text)
    return [item for item in _LIST_SEPARATOR.split(text.strip()) if item.strip()]
