"""Shared clean-up of identity numbers typed by users."""

from __future__ import annotations

import re

# Users copy numbers from cards and letters written as "3201 0101-9000.0001".
_SEPARATORS = re.compile(r"[\s.\-]+")
_ASCII_DIGITS = frozenset("0123456789")


def strip_separators(text: str) -> str:
    """Remove whitespace, dots and hyphens; every other character is kept."""
    return _SEPARATORS.sub("", text)


def is_ascii_digits(text: str) -> bool:
    """True when every character is 0-9 (str.isdigit also accepts e.g. superscripts)."""
    return all(char in _ASCII_DIGITS for char in text)


def count_ascii_digits(text: str) -> int:
    """How many 0-9 characters the text holds."""
    return sum(char in _ASCII_DIGITS for char in text)
