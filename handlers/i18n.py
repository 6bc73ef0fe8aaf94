"""Message catalogues (gettext .po files, read compiled to .mo) and Babel formatting.

Message ids are stable keys ("enroll.ask_nik"); every language's .po file gives
the text. Indonesian is the default and the fallback. Placeholders use
`str.format` names ("{name}"); a test keeps the catalogues in step.

The .po files are the source; at start-up each language is read from its compiled
.mo file with the standard library's `gettext.GNUTranslations`, which keeps the
texts and nothing else (Babel's .po reader built a `Catalog` of `Message` objects
and left about 1 MB of resident memory for 0.4 MB of text). A .mo file is named by
the digest of the .po it was compiled from (`messages.<sha256 prefix>.mo`, next to
the .po), so a .po edited since (a new msgid) is never read from an old .mo: the .mo
for the current digest is compiled from the .po with Babel when missing, written
next to the .po when that folder is writable (the older ones removed), or kept in
memory when it is not (an installed read-only package whose .mo was not built).
`make install` and the image build (`python -m handlers.i18n`) compile them ahead,
so the bot never loads Babel's catalogue reader.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import gettext
import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path

from babel.dates import format_date, format_interval
from babel.numbers import format_currency, format_decimal

from domain.vocabulary import Language

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
#: The hex digits of the .po's SHA-256 in its .mo file's name.
_DIGEST_CHARS = 16

# Babel locales: en_ID keeps Indonesian currency conventions ("Rp16.800") in English text.
_BABEL_LOCALE = {Language.INDONESIAN: "id_ID", Language.ENGLISH: "en_ID"}

log = logging.getLogger(__name__)


def po_path(language: Language, locales_dir: Path = LOCALES_DIR) -> Path:
    return locales_dir / language.value / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_path(po: Path, source: bytes) -> Path:
    """The compiled file for the .po whose bytes are `source`."""
    digest = hashlib.sha256(source).hexdigest()[:_DIGEST_CHARS]
    return po.with_name(f"{po.stem}.{digest}.mo")


def compile_po(source: bytes, language: Language) -> bytes:
    """The .mo file of a .po file's bytes (Babel; fuzzy entries included, as they are read)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    catalog = read_po(io.BytesIO(source), locale=_BABEL_LOCALE[language])
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=True)
    return compiled.getvalue()


def compile_catalog(language: Language, locales_dir: Path = LOCALES_DIR) -> tuple[Path, bytes]:
    """The .mo of one language's current .po, compiled and written unless already there.

    Returns its path and bytes. Writing is atomic (a temporary file renamed); a
    folder that cannot be written is logged and the bytes are still returned.
    """
    po = po_path(language, locales_dir)
    source = po.read_bytes()
    mo = mo_path(po, source)
    try:
        return mo, mo.read_bytes()
    except FileNotFoundError:
        pass
    compiled = compile_po(source, language)
    temporary: str | None = None
    try:
        with tempfile.NamedTemporaryFile(dir=mo.parent, suffix=".tmp", delete=False) as fh:
            temporary = fh.name
            fh.write(compiled)
        os.replace(temporary, mo)
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        log.warning("catalogue %s compiled in memory, not written: %s", mo, error)
        return mo, compiled
    for older in mo.parent.glob(f"{po.stem}.*.mo"):
        if older != mo:
            older.unlink(missing_ok=True)
    return mo, compiled


def read_catalog(language: Language, locales_dir: Path = LOCALES_DIR) -> dict[str, str]:
    """All translated messages of one language as {msgid: msgstr}."""
    _, compiled = compile_catalog(language, locales_dir)
    translations = gettext.GNUTranslations(io.BytesIO(compiled))
    # GNUTranslations keeps every entry in `_catalog`: msgid -> text, with the
    # header under "" and plural forms under (msgid, n) (our catalogues have none).
    entries: dict[object, str] = vars(translations)["_catalog"]
    return {key: text for key, text in entries.items() if isinstance(key, str) and key and text}


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


def main() -> None:
    """`python -m handlers.i18n`: compile every language's .mo (make install, the image)."""
    for language in Language:
        mo, _ = compile_catalog(language)
        print(mo)


if __name__ == "__main__":
    main()
