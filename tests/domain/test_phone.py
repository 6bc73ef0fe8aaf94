from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.phone import PhoneError, PhoneNumber, PhoneProblem, display_phone, parse_mobile

E164 = "+6281234567890"


@pytest.mark.parametrize(
    "text",
    [
        "081234567890",
        "0812-3456-7890",
        "0812 3456 7890",
        "0812.3456.7890",
        "(0812) 3456-7890",
        "6281234567890",
        "62 812 3456 7890",
        "+6281234567890",
        "+62 812-3456-7890",
        "+62 (0)812 3456 7890",
        "81234567890",  # trunk 0 left out
        "  0812 3456 7890\n",
    ],
)
def test_indonesian_mobile_spellings_give_one_e164(text: str) -> None:
    assert parse_mobile(text) == PhoneNumber(E164)


def test_whatsapp_id_is_the_digits_without_plus() -> None:
    assert PhoneNumber(E164).whatsapp_id == "6281234567890"


@pytest.mark.parametrize("text", ["", "   "])
def test_empty(text: str) -> None:
    assert parse_mobile(text) == PhoneError(PhoneProblem.EMPTY)


@pytest.mark.parametrize(
    "text",
    [
        "0812",  # too short
        "0812345678901234567",  # too long
        "0812-3456-ABCD",  # letters are not mapped to digits
        "nomor saya 081234567890",
        "+",
        "0000000000",
    ],
)
def test_not_a_number(text: str) -> None:
    assert parse_mobile(text) == PhoneError(PhoneProblem.NOT_A_NUMBER)


@pytest.mark.parametrize("text", ["021-5550123", "(021) 555 0123", "+62 21 5550123", "62215550123"])
def test_jakarta_landline_is_not_mobile(text: str) -> None:
    assert parse_mobile(text) == PhoneError(PhoneProblem.NOT_MOBILE)


@pytest.mark.parametrize("text", ["62811234567", "62857123456"])
def test_sixty_two_without_plus_is_international_not_national(text: str) -> None:
    # phonenumbers alone reads these as national numbers in area 062x (+6262...).
    assert parse_mobile(text) == PhoneNumber("+" + text)


def test_foreign_mobile_is_accepted_with_plus() -> None:
    assert parse_mobile("+44 7911 123456") == PhoneNumber("+447911123456")


def test_region_applies_to_numbers_without_plus() -> None:
    assert parse_mobile("07911 123456", region="GB") == PhoneNumber("+447911123456")
    assert parse_mobile("07911 123456") == PhoneError(PhoneProblem.NOT_A_NUMBER)


@given(st.from_regex(r"8[1-5][0-9]{8}", fullmatch=True))
def test_parsed_numbers_are_e164_and_spelling_does_not_matter(subscriber: str) -> None:
    result = parse_mobile("0" + subscriber)
    if isinstance(result, PhoneError):
        # Some prefixes are unassigned; every spelling must then agree.
        assert parse_mobile("+62" + subscriber) == result
        return
    assert result.e164 == "+62" + subscriber
    assert result.whatsapp_id == "62" + subscriber
    assert parse_mobile("62" + subscriber) == result
    assert parse_mobile("+62 " + subscriber) == result


@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    assert isinstance(parse_mobile(text), PhoneNumber | PhoneError)


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("+6281298765432", "0812-9876-5432"),
        ("6281298765432", "0812-9876-5432"),  # a WhatsApp id
        ("+447911123456", "+44 7911 123456"),  # abroad: the country code stays
        ("not a phone", "not a phone"),
    ],
)
def test_phone_is_displayed_as_people_write_it(stored: str, shown: str) -> None:
    assert display_phone(stored) == shown
