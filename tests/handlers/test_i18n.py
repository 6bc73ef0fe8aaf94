"""Texts and formats in one language (handlers/i18n.py): month spans, names that end a sentence."""

from __future__ import annotations

from datetime import date

from domain.vocabulary import Language
from handlers.i18n import Catalogs, Translator
from tests.fakes.chat import Chat


def translator(language: Language) -> Translator:
    return Catalogs().translator(language)


def test_a_one_month_span_is_that_month() -> None:
    """Issue 12 item 15: not "Januari 2027 – Januari 2027"."""
    t = translator(Language.INDONESIAN)
    assert t.months(date(2027, 1, 1), date(2027, 1, 1)) == "Januari 2027"
    assert t.months(date(2027, 1, 1), date(2027, 3, 1)) == "Januari–Maret 2027"
    assert t.months(date(2026, 12, 1), date(2027, 2, 1)) == "Desember 2026–Februari 2027"
    english = translator(Language.ENGLISH)
    assert english.months(date(2027, 1, 15), date(2027, 1, 31)) == "January 2027"


def test_a_value_ending_in_a_period_ends_the_sentence_itself() -> None:
    t = translator(Language.INDONESIAN)
    done = t("registration.done", name="Budi S.")
    assert done.startswith("Terima kasih, Budi S. Pendaftaran ASN berhasil.")
    assert ".!" not in done
    assert t("registration.done", name="Budi").startswith("Terima kasih, Budi! ")
    assert ".." not in t("pic.queue.returned", reason="Nama tidak sesuai KTP.")


async def test_an_asn_named_with_a_final_period_is_thanked_without_a_stray_mark(
    guest: Chat,
) -> None:
    await guest.register(name="Budi S.")
    assert "Terima kasih, Budi S. Pendaftaran ASN berhasil" in guest.text
    assert ".!" not in guest.text and ".." not in guest.text
