"""The catalogues read from compiled .mo files (handlers/i18n.py) say what the .po files say,
and an edited .po is never read from an older .mo."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from domain.vocabulary import Language
from handlers.i18n import LOCALES_DIR, Catalogs, po_path, read_catalog


def po_texts(language: Language, locales_dir: Path = LOCALES_DIR) -> dict[str, str]:
    """Every msgid's text as Babel's .po reader gives it (how the catalogues were read before)."""
    with po_path(language, locales_dir).open("rb") as fh:
        catalog = read_po(fh)
    return {
        str(message.id): str(message.string)
        for message in catalog
        if message.id and isinstance(message.id, str) and message.string
    }


@pytest.fixture
def locales(tmp_path: Path) -> Path:
    """A copy of the .po files alone (no .mo yet)."""
    copy = tmp_path / "locales"
    for language in Language:
        po = po_path(language, copy)
        po.parent.mkdir(parents=True)
        shutil.copyfile(po_path(language), po)
    return copy


@pytest.mark.parametrize("language", list(Language))
def test_every_text_is_the_po_files_text(language: Language) -> None:
    """Every msgid, the plural keys ("….one" / "….other") among them, reads as in the .po."""
    expected = po_texts(language)
    assert len(expected) > 800  # the whole catalogue, not an empty read
    assert any(key.endswith(".one") for key in expected)
    assert Catalogs().messages(language) == expected


def test_a_missing_mo_is_compiled_next_to_the_po_and_read_from_it(locales: Path) -> None:
    english = read_catalog(Language.ENGLISH, locales)
    folder = po_path(Language.ENGLISH, locales).parent
    compiled = sorted(path.name for path in folder.glob("*.mo"))
    assert len(compiled) == 1 and compiled[0].startswith("messages.")
    assert english == po_texts(Language.ENGLISH)


def test_an_edited_po_is_read_anew_and_its_old_mo_removed(locales: Path) -> None:
    po = po_path(Language.INDONESIAN, locales)
    read_catalog(Language.INDONESIAN, locales)
    (old_mo,) = po.parent.glob("*.mo")
    po.write_text(
        po.read_text(encoding="utf-8") + '\nmsgid "misc.added"\nmsgstr "Kunci baru"\n',
        encoding="utf-8",
    )
    # The old .mo stays newer than the .po (a clock or a copy that keeps times): the
    # digest, not the time, decides.
    stamp = po.stat().st_mtime
    os.utime(old_mo, (stamp + 60, stamp + 60))
    messages = read_catalog(Language.INDONESIAN, locales)
    assert messages["misc.added"] == "Kunci baru"
    (new_mo,) = po.parent.glob("*.mo")
    assert new_mo != old_mo


def test_a_folder_that_cannot_be_written_still_gives_the_texts(
    locales: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    messages = read_catalog(Language.INDONESIAN, locales)
    assert messages == po_texts(Language.INDONESIAN, locales)
    folder = po_path(Language.INDONESIAN, locales).parent
    assert sorted(path.name for path in folder.iterdir()) == ["messages.po"]  # no temporary left
