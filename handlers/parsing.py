"""Parsing of typed answers that are not program rules: names, places, dates."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from enum import StrEnum

from handlers.types import Option

NAME_MAX = 100
PLACE_MAX = 80

_SPACES = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
#: Between the items of a typed list: "1 3", "1,3", "Siti, Joko", "Siti dan Joko".
_NUMBER_LIST = re.compile(r"^[\d\s,;.&+/]+$")
_LIST_SEPARATOR = re.compile(r"\s*(?:[,;&+/]|\s(?:dan|and)\s)\s*", re.IGNORECASE)
_NAME_ALLOWED = re.compile(r"^[^\W\d_]+(?:[ '.,\-][^\W\d_]*)*\.?$", re.UNICODE)
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


def clean_spaces(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def parse_person_name(text: str) -> str | TextProblem:
    """A name as on the KTP: letters with spaces, apostrophes, dots, commas, hyphens."""
    name = clean_spaces(text)
    if len(name) < 2:
        return TextProblem.TOO_SHORT
    if len(name) > NAME_MAX:
        return TextProblem.TOO_LONG
    if any(ch.isdigit() for ch in name):
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


def parse_day(text: str) -> date | DateProblem:
    """A typed date: 12-05-1980, 12/05/1980, 12.05.1980, 12 05 1980, 12 Mei 1980, 12 May 1980."""
    parts = [p for p in re.split(r"[\s/.\-,]+", text.strip().casefold()) if p]
    if len(parts) != 3:
        return DateProblem.FORMAT
    day_s, month_s, year_s = parts
    month = int(month_s) if month_s.isdigit() else _MONTHS.get(month_s)
    if not (day_s.isdigit() and year_s.isdigit() and len(year_s) == 4) or month is None:
        return DateProblem.FORMAT
    try:
        return date(int(year_s), month, int(day_s))
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
    if by_position and wanted.isdigit() and 1 <= int(wanted) <= len(keyed):
        return keyed[int(wanted) - 1][0] or None
    for key, label in keyed:
        if key and wanted in (label, normalise(key)):
            return key
    prefixed = [key for key, label in keyed if key and label.startswith(wanted + " ")]
    return prefixed[0] if len(prefixed) == 1 else None


def split_list(text: str) -> list[str]:
    """The items of a typed list of choices, in order: "1 3" and "1, 3" give the numbers;
    "Siti, Joko" or "Siti dan Joko" the names (a name's own spaces stay inside it)."""
    if _NUMBER_LIST.match(text):
        return re.findall(r"\d+", text)
    return [item for item in _LIST_SEPARATOR.split(text.strip()) if item.strip()]
