"""The message catalogues stay complete and consistent with the code."""

from __future__ import annotations

import re
import string
from pathlib import Path

from domain.vocabulary import Language, Occupation, PaymentPlan, SponsorshipStatus, WorkerConsent
from handlers.i18n import Catalogs
from sertakan_data import WHATSAPP_TEMPLATES, shipped

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


# --- one vocabulary (issue 12, item 15) ------------------------------------------------------

TEMPLATES_FILE = shipped(WHATSAPP_TEMPLATES)
#: The sponsor relationship has one word family in Indonesian: sponsor, mensponsori,
#: disponsori, (yang Anda) sponsori. These other words for it crept in before.
OTHER_RELATIONSHIP_WORDS = re.compile(
    r"\b(penanggung|menanggung|tanggungan|ditanggung|membiayai|dibiayai|pembiaya|pendaftar)\b",
    re.IGNORECASE,
)


def _shipped_texts(language: Language) -> dict[str, str]:
    """Every text a person can read in `language`: the catalogue and the WhatsApp templates."""
    import json

    texts = dict(Catalogs().messages(language))
    templates = json.loads(TEMPLATES_FILE.read_text(encoding="utf-8"))["templates"]
    for key, entry in templates.items():
        text = entry["languages"].get(language.value)
        if text is not None:
            texts[f"template:{key}"] = text["body"] + "\n" + "\n".join(text.get("buttons", []))
    return texts


def test_one_word_for_the_sponsor_relationship() -> None:
    found = {
        key: match.group(0)
        for key, text in _shipped_texts(Language.INDONESIAN).items()
        if (match := OTHER_RELATIONSHIP_WORDS.search(text))
    }
    assert found == {}


def test_one_quote_style_curly_double_quotes() -> None:
    for language in Language:
        for key, text in _shipped_texts(language).items():
            assert '"' not in text, (language, key, "straight quotes: write “…”")
            assert not set("‘’«»„") & set(text), (language, key, "other quote marks: write “…”")
            opened = re.findall("[“”]", text)
            assert opened == ["“", "”"] * (len(opened) // 2), (language, key, "unbalanced “…”")
