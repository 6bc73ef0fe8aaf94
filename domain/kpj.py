"""KPJ (Kartu Peserta Jamsostek): the BPJS Ketenagakerjaan membership number.

Assumption: a KPJ is 11 digits (the number printed on the membership card and
returned by the BPJS branch for each registered BPU participant). BPJS publishes
no formal specification of the number; should a branch send another length,
`KPJ_DIGITS` is the one place to change (configurable later). No check digit is
known, so only the shape is checked.
"""

from __future__ import annotations

from enum import StrEnum

from domain._digits import is_ascii_digits, strip_separators

KPJ_DIGITS = 11


class KpjProblem(StrEnum):
    """Why a text is not a KPJ number."""

    EMPTY = "empty"
    NON_DIGIT = "non_digit"
    LENGTH = "length"


def parse_kpj(raw: str) -> str | KpjProblem:
    """The KPJ number in `raw`, or why it is not one.

    Whitespace, dots and hyphens are removed (cards print "21 012 345 678");
    what is left must be exactly `KPJ_DIGITS` ASCII digits. A number written
    in scientific notation ("2.10123E+10") has lost digits and gives NON_DIGIT.
    """
    cleaned = strip_separators(raw.strip())
    if not cleaned:
        return KpjProblem.EMPTY
    if not is_ascii_digits(cleaned):
        return KpjProblem.NON_DIGIT
    if len(cleaned) != KPJ_DIGITS:
        return KpjProblem.LENGTH
    return cleaned
