"""The message catalogues stay complete and consistent with the code."""

from __future__ import annotations

import re
import string
from pathlib import Path

from domain.vocabulary import Language, Occupation, PaymentPlan, SponsorshipStatus, WorkerConsent
from handlers.i18n import Catalogs

HANDLERS = Path(__file__).resolve().parents[2] / "handlers"


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_language_has_the_same_keys_and_placeholders() -> None:
    catalogs = Catalogs()
    indonesian = catalogs.messages(Language.INDONESIAN)
    for language in Language:
        messages = catalogs.messages(language)
        assert messages.keys() == indonesian.keys(), language
        for key, text in messages.items():
            assert _fields(text) == _fields(indonesian[key]), (language, key)


def test_every_literal_key_used_in_code_exists() -> None:
    known = Catalogs().messages(Language.INDONESIAN)
    used: set[str] = set()
    for path in HANDLERS.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\bt\(\s*"([a-z_]+\.[a-z_.]+)\"""", source))
        used |= set(re.findall(r"""(?:help_key|title_key|ask_key) = "([a-z_.]+)\"""", source))
    assert used, "the scan found no keys: the pattern is broken"
    assert sorted(used - known.keys()) == []


def test_every_enum_value_has_a_label() -> None:
    known = Catalogs().messages(Language.INDONESIAN)
    for prefix, enum in (
        ("occupation", Occupation),
        ("status", SponsorshipStatus),
        ("consent", WorkerConsent),
        ("plan", PaymentPlan),
        ("plan.option", PaymentPlan),
    ):
        for member in enum:
            assert f"{prefix}.{member.value}" in known
