"""The one text splitter and label shortener every channel uses (handlers/splitting.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from handlers.splitting import shorten, split_tail, split_text, utf16_length


def test_emoji_count_two_units() -> None:
    assert utf16_length("📅 Bulanan") == 10
    assert utf16_length("Bulanan") == 7


def test_short_text_is_one_chunk_and_a_blank_text_none() -> None:
    assert split_text("Halo", 4096) == ["Halo"]
    assert split_text(" \n ", 4096) == []


def test_long_text_splits_on_lines_and_long_lines_at_spaces() -> None:
    text = "\n".join(["a" * 30, "b" * 30, "kata " * 20])
    chunks = split_text(text, 40)
    assert chunks[:2] == ["a" * 30, "b" * 30]
    assert all(utf16_length(chunk) <= 40 for chunk in chunks)
    assert all(chunk.replace("kata ", "").strip() in ("", "kata") for chunk in chunks[2:])


def test_a_cut_never_splits_an_emoji() -> None:
    chunks = split_text("📱" * 30, 9)
    assert "".join(chunks) == "📱" * 30
    assert all(utf16_length(chunk) <= 9 for chunk in chunks)


@given(st.text(min_size=0, max_size=300), st.integers(min_value=2, max_value=60))
def test_chunks_fit_and_keep_every_non_space_character(text: str, limit: int) -> None:
    chunks = split_text(text, limit)
    assert all(0 < utf16_length(chunk) <= limit for chunk in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())


def test_the_tail_for_buttons_keeps_whole_last_lines() -> None:
    head, tail = split_tail("satu\ndua\ntiga", 9, 4096)
    assert (head, tail) == (["satu"], "dua\ntiga")


def test_shorten_cuts_after_a_whole_word() -> None:
    assert shorten("Dinas Pendidikan dan Kebudayaan", 20) == "Dinas Pendidikan…"
    assert shorten("Marbot / pengurus rumah ibadah", 24) == "Marbot / pengurus rumah…"
    assert shorten("📅 Bulanan – Rp16.800/bulan", 20) == "📅 Bulanan…"
    assert shorten("Kependudukan", 8) == "Kependu…"  # one long word: cut inside it
    assert shorten("Ya", 20) == "Ya"
    assert shorten("  banyak   spasi  ", 20) == "banyak spasi"
