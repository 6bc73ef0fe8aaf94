"""NIP (Nomor Induk Pegawai): the 18-digit number of an ASN (civil servant).

PNS:  birth YYYYMMDD + start of service YYYYMM + sex (1/2) + serial (3).
PPPK: birth YYYYMMDD + start year YYYY + "2" + intake round (1) + sex (1/2) + serial (3).

The two are told apart by index 12: a PNS start month is 01..12, so that digit
is 0 or 1; "2" there means PPPK. Any other digit there is an impossible PNS
start month. The sex digit is index 14 in both layouts.

Choices made here, since no public source pins them:
- the start year must lie between birth year + 15 and birth year + 70
  (inclusive), both for PNS and PPPK; month and day are not compared;
- the PPPK intake round digit is accepted as is (0..9);
- the serial is not checked;
- there is no clock here, so a birth date or start in the future is not caught.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from enum import StrEnum

from domain._digits import count_ascii_digits, is_ascii_digits, strip_separators
from domain.vocabulary import EmploymentType, Sex

NIP_LENGTH = 18
MIN_START_AGE = 15
MAX_START_AGE = 70
_PPPK_MARKER = "2"
_SEX_BY_DIGIT = {"1": Sex.MALE, "2": Sex.FEMALE}


class NipProblem(StrEnum):
    EMPTY = "empty"
    NOT_DIGITS = "not_digits"
    WRONG_LENGTH = "wrong_length"
    IMPOSSIBLE_BIRTH_DATE = "impossible_birth_date"
    IMPOSSIBLE_START = "impossible_start"
    BAD_SEX_DIGIT = "bad_sex_digit"


@dataclasses.dataclass(slots=True, frozen=True)
class NipError:
    """Why a text is not a NIP; `length` is the number of digits found (0-9 only)."""

    problem: NipProblem
    length: int


@dataclasses.dataclass(slots=True, frozen=True)
class Nip:
    """A NIP whose layout, dates and sex digit are possible.

    `service_start_month` is set for PNS only; `pppk_intake_round` for PPPK only.
    """

    value: str
    employment_type: EmploymentType
    birth_date: date
    sex: Sex
    service_start_year: int
    service_start_month: int | None
    pppk_intake_round: int | None
    serial: str


def parse_nip(text: str) -> Nip | NipError:
    """Parse a NIP typed by a user.

    Whitespace, dots and hyphens are removed; any other non-digit gives
    NOT_DIGITS. Checks run in this order: birth date, start of service, sex
    digit; the first failure is reported.
    """
    cleaned = strip_separators(text.strip())
    if not cleaned:
        return NipError(NipProblem.EMPTY, 0)
    if not is_ascii_digits(cleaned):
        return NipError(NipProblem.NOT_DIGITS, count_ascii_digits(cleaned))
    if len(cleaned) != NIP_LENGTH:
        return NipError(NipProblem.WRONG_LENGTH, len(cleaned))

    try:
        birth_date = date(int(cleaned[0:4]), int(cleaned[4:6]), int(cleaned[6:8]))
    except ValueError:
        return NipError(NipProblem.IMPOSSIBLE_BIRTH_DATE, NIP_LENGTH)

    start_year = int(cleaned[8:12])
    start_month: int | None
    intake_round: int | None
    if cleaned[12] == _PPPK_MARKER:
        employment_type = EmploymentType.PPPK
        start_month, intake_round = None, int(cleaned[13])
    else:
        employment_type = EmploymentType.PNS
        start_month, intake_round = int(cleaned[12:14]), None
        if not 1 <= start_month <= 12:
            return NipError(NipProblem.IMPOSSIBLE_START, NIP_LENGTH)
    if not birth_date.year + MIN_START_AGE <= start_year <= birth_date.year + MAX_START_AGE:
        return NipError(NipProblem.IMPOSSIBLE_START, NIP_LENGTH)

    sex = _SEX_BY_DIGIT.get(cleaned[14])
    if sex is None:
        return NipError(NipProblem.BAD_SEX_DIGIT, NIP_LENGTH)
    return Nip(
        value=cleaned,
        employment_type=employment_type,
        birth_date=birth_date,
        sex=sex,
        service_start_year=start_year,
        service_start_month=start_month,
        pppk_intake_round=intake_round,
        serial=cleaned[15:18],
    )
