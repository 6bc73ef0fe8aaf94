"""Mobile phone numbers, stored as E.164 (+62...), parsed with `phonenumbers`.

Accepted spellings (with spaces, dots, hyphens, parentheses or slashes):
"0812-3456-7890", "62812...", "+62 812 ...", "+62 (0)812 ...", and "812..."
without the trunk 0 (phonenumbers reads it as a national number). Digits that
start with "62" and have no "+" are read as international, because Indonesian
users write 628...; a landline typed without its trunk 0 in area 062x is the
price of that choice. Numbers of other countries are accepted when they are
valid mobiles (workers abroad keep their WhatsApp). Letters are refused,
although phonenumbers would map them to digits ("1-800-FLOWERS").
"""

from __future__ import annotations

import dataclasses
import re
from enum import StrEnum

_ALLOWED = re.compile(r"[0-9+\s.\-()/]+")
_NOISE = re.compile(r"[\s.\-()/]+")
_INDONESIA_COUNTRY_CODE = "62"


class PhoneProblem(StrEnum):
    EMPTY = "empty"
    NOT_A_NUMBER = "not_a_number"
    NOT_MOBILE = "not_mobile"


@dataclasses.dataclass(slots=True, frozen=True)
class PhoneError:
    problem: PhoneProblem


@dataclasses.dataclass(slots=True, frozen=True)
class PhoneNumber:
    """A valid mobile number in E.164, e.g. "+6281234567890"."""

    e164: str

    @property
    def whatsapp_id(self) -> str:
        """The E.164 digits without "+", as WhatsApp names a user."""
        return self.e164.removeprefix("+")


def parse_mobile(text: str, *, region: str = "ID") -> PhoneNumber | PhoneError:
    """Parse a mobile number typed by a user; `region` applies to numbers without "+".

    Invalid numbers (per phonenumbers' metadata) give NOT_A_NUMBER; valid
    numbers whose type is not MOBILE or FIXED_LINE_OR_MOBILE give NOT_MOBILE.
    """
    # phonenumbers' metadata (1 MB) loads with the first number, not with the bot.
    import phonenumbers

    stripped = text.strip()
    if not stripped:
        return PhoneError(PhoneProblem.EMPTY)
    if _ALLOWED.fullmatch(stripped) is None:
        return PhoneError(PhoneProblem.NOT_A_NUMBER)
    if _NOISE.sub("", stripped).startswith(_INDONESIA_COUNTRY_CODE):
        stripped = "+" + stripped
    try:
        number = phonenumbers.parse(stripped, region)
    except phonenumbers.NumberParseException:
        return PhoneError(PhoneProblem.NOT_A_NUMBER)
    if not phonenumbers.is_valid_number(number):
        return PhoneError(PhoneProblem.NOT_A_NUMBER)
    mobile = (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )
    if phonenumbers.number_type(number) not in mobile:
        return PhoneError(PhoneProblem.NOT_MOBILE)
    return PhoneNumber(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def display_phone(phone: str) -> str:
    """A number as people write it: "0812-9876-5432" for Indonesia.

    `phone` is a stored E.164 number or any spelling `parse_mobile` accepts
    (a WhatsApp id "62812..." too). Numbers of other countries keep their
    country code ("+49 170 1234567"); anything else is returned unchanged.
    """
    parsed = parse_mobile(phone)
    if isinstance(parsed, PhoneError):
        return phone
    import phonenumbers

    number = phonenumbers.parse(parsed.e164, None)
    if number.country_code == int(_INDONESIA_COUNTRY_CODE):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
