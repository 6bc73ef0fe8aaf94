"""Message catalogues (gettext .po files read with Babel) and Babel formatting.

Message ids are stable keys ("enroll.ask_nik"); every language's .po file gives
the text. Indonesian is the default and the fallback. Placeholders use
`str.format` names ("{name}"); a test keeps the catalogues in step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from pathlib import Path

from babel.dates import format_date, format_interval
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

from domain.vocabulary import Language

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"

# Babel locales: en_ID keeps Indonesian currency conventions ("Rp16.800") in English text.
_BABEL_LOCALE = {Language.INDONESIAN: "id_ID", Language.ENGLISH: "en_ID"}


def read_catalog(language: Language, locales_dir: Path = LOCALES_DIR) -> dict[str, str]:
    """All translated messages of one language as {msgid: msgstr}."""
    path = locales_dir / language.value / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=_BABEL_LOCALE[language])
    return {
        str(message.id): str(message.string)
        for message in catalog
        if message.id and isinstance(message.id, str) and message.string
    }


class Catalogs:
    """Every language's messages, loaded once at start-up."""

    def __init__(self, locales_dir: Path = LOCALES_DIR) -> None:
        self._messages = {lang: read_catalog(lang, locales_dir) for lang in Language}

    def messages(self, language: Language) -> dict[str, str]:
        return self._messages[language]

    def translator(self, language: Language) -> Translator:
        return Translator(
            language=language,
            messages=self._messages[language],
            fallback=self._messages[Language.INDONESIAN],
        )


@dataclasses.dataclass(slots=True, frozen=True)
class Translator:
    """Texts and formats in one language."""

    language: Language
    messages: dict[str, str]
    fallback: dict[str, str]

    def __call__(self, key: str, /, **params: object) -> str:
        """The message for `key` with `params` filled in.

        A text value ending in a period ("Budi S.", a typed reason) ends the sentence
        itself: the message's own "." or "!" right after it is left out, so it never
        reads "Budi S.!" or "Budi S..".

        A key missing in this language falls back to Indonesian; a key missing
        everywhere raises KeyError (caught by the catalogue test, never at run time).
        """
        template = self.messages.get(key) or self.fallback[key]
        if not params:
            return template
        for name, value in params.items():
            if isinstance(value, str) and value.endswith("."):
                field = "{" + name + "}"
                template = template.replace(field + ".", field).replace(field + "!", field)
        return template.format(**params)

    def months(self, first: dt.date, last: dt.date) -> str:
        """A span of months: "Januari 2027" for one, "Januari–Maret 2027" or
        "Desember 2026–Februari 2027" for several (Babel's interval format)."""
        return _months(first.replace(day=1), last.replace(day=1), self.locale)

    def has(self, key: str) -> bool:
        return key in self.messages or key in self.fallback

    @property
    def locale(self) -> str:
        return _BABEL_LOCALE[self.language]

    def money(self, rupiah: int) -> str:
        """Rupiah without decimals: "Rp16.800"."""
        return _money(rupiah, self.locale)

    def date(self, value: dt.date) -> str:
        """A day: "15 Desember 2026"."""
        return _date(value, "d MMMM y", self.locale)

    def month(self, value: dt.date) -> str:
        """A month: "Desember 2026"."""
        return _date(value, "MMMM y", self.locale)

    def number(self, value: int) -> str:
        return format_decimal(value, locale=self.locale)


# Babel formatting costs about 0.1 ms a call and the same few amounts and dates
# recur in every conversation, so results are memoised (bounded).
@functools.lru_cache(maxsize=4096)
def _money(rupiah: int, locale: str) -> str:
    return format_currency(rupiah, "IDR", format="¤#,##0", locale=locale, currency_digits=False)


@functools.lru_cache(maxsize=1024)
def _months(first: dt.date, last: dt.date, locale: str) -> str:
    return format_interval(first, last, "yMMMM", locale=locale)


@functools.lru_cache(maxsize=4096)
def _date(value: dt.date, pattern: str, locale: str) -> str:
    return format_date(value, pattern, locale=locale)
