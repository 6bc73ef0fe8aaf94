"""NIK (Nomor Induk Kependudukan): the 16-digit Indonesian resident number.

Layout: province (2) + regency (2) + district (2) + birth date DDMMYY, with 40
added to the day for women, + serial (4). Region codes and the serial are not
validated: unknown codes are accepted (PRODUCT 3). The birth date and sex read
from a NIK are cross-checks for the caller, not proof.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from enum import StrEnum

from domain._digits import count_ascii_digits, is_ascii_digits, strip_separators
from domain.vocabulary import Sex

NIK_LENGTH = 16
_FEMALE_DAY_OFFSET = 40
# Leap year used to ask "can this day/month exist at all" before the century is known.
_ANY_LEAP_YEAR = 2000
# This century and the one before; only 29 Feb can fail in the first (2100) and need the second.
_CENTURIES_TRIED = 2


class NikProblem(StrEnum):
    EMPTY = "empty"
    NOT_DIGITS = "not_digits"
    WRONG_LENGTH = "wrong_length"
    IMPOSSIBLE_DATE = "impossible_date"


@dataclasses.dataclass(slots=True, frozen=True)
class NikError:
    """Why a text is not a NIK; `length` is the number of digits found (0-9 only)."""

    problem: NikProblem
    length: int


@dataclasses.dataclass(slots=True, frozen=True)
class Nik:
    """A NIK whose layout and birth date are possible; region codes are not checked."""

    value: str
    province_code: str
    regency_code: str
    district_code: str
    birth_date: date
    sex: Sex
    serial: str

    @property
    def masked(self) -> str:
        """First 4 and last 4 digits, the rest as `*`: safe for logs."""
        return mask_nik(self.value)


def mask_nik(value: str) -> str:
    """Mask a 16-character NIK as "3201********0001".

    Anything that is not exactly 16 characters long is masked completely
    (same length, all `*`), so raw user input never leaks into logs.
    """
    if len(value) != NIK_LENGTH:
        return "*" * len(value)
    return value[:4] + "*" * 8 + value[-4:]


def parse_nik(text: str, *, today: date) -> Nik | NikError:
    """Parse a NIK typed by a user.

    Whitespace, dots and hyphens are removed; any other non-digit (including
    non-ASCII digits) gives NOT_DIGITS. The two-digit birth year is placed in
    the most recent century that puts the birth date on or before `today`, so
    nobody is older than 100 years by this reading. Only two centuries are
    tried: 29 Feb of a year ending in 00 that is not leap in either (29 Feb
    1900 when today is in Jan-Feb 2000) gives IMPOSSIBLE_DATE.
    """
    cleaned = strip_separators(text.strip())
    if not cleaned:
        return NikError(NikProblem.EMPTY, 0)
    if not is_ascii_digits(cleaned):
        return NikError(NikProblem.NOT_DIGITS, count_ascii_digits(cleaned))
    if len(cleaned) != NIK_LENGTH:
        return NikError(NikProblem.WRONG_LENGTH, len(cleaned))

    encoded_day = int(cleaned[6:8])
    month = int(cleaned[8:10])
    two_digit_year = int(cleaned[10:12])
    if encoded_day > _FEMALE_DAY_OFFSET:
        sex, day = Sex.FEMALE, encoded_day - _FEMALE_DAY_OFFSET
    else:
        sex, day = Sex.MALE, encoded_day
    birth_date = _birth_date(day, month, two_digit_year, today)
    if birth_date is None:
        return NikError(NikProblem.IMPOSSIBLE_DATE, NIK_LENGTH)
    return Nik(
        value=cleaned,
        province_code=cleaned[0:2],
        regency_code=cleaned[2:4],
        district_code=cleaned[4:6],
        birth_date=birth_date,
        sex=sex,
        serial=cleaned[12:16],
    )


def _birth_date(day: int, month: int, two_digit_year: int, today: date) -> date | None:
    """The most recent real date with this day, month and year % 100 not after `today`."""
    try:
        date(_ANY_LEAP_YEAR, month, day)
    except ValueError:
        return None
    year = today.year - (today.year - two_digit_year) % 100
    for _ in range(_CENTURIES_TRIED):
        try:
            candidate = date(year, month, day)
        except ValueError:  # 29 Feb in a year that is not leap
            candidate = None
        if candidate is not None and candidate <= today:
            return candidate
        year -= 100
    return None
