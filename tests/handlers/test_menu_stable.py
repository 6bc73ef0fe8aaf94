"""Issue 12 item 13 through the real engine: "batal" says what happens to the answers (kept as
a draft, with ways to continue or discard it), the main menu keeps its positions whether a draft
exists or not, and a button pressed after an enrollment was sent says it was already sent."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.models import Sponsorship
from tests.fakes.chat import Chat


async def test_batal_keeps_a_draft_says_so_and_the_menu_keeps_its_numbers(asn: Chat) -> None:
    await asn.say("menu")
    before = asn.labels()
    assert before[:2] == ["➕ Daftarkan pekerja", "👥 Pekerja saya"]
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.say("batal")
    text = asn.text
    assert "Anda keluar dari pendaftaran pekerja. Belum ada yang dikirim." in text
    assert "disimpan sebagai draf" in text
    assert asn.labels() == ["▶️ Lanjutkan", "🗑 Buang draf", "🏠 Menu utama"]
    await asn.press("Menu utama")
    after = asn.labels()
    # Every entry where it was; the draft comes last.
    assert after[: len(before)] == before
    assert after[len(before) :] == ["▶️ Lanjutkan pendaftaran pekerja"]
    await asn.press("Lanjutkan pendaftaran pekerja")
    assert "Melanjutkan pendaftaran pekerja" in asn.text


async def test_a_kept_draft_can_be_discarded(asn: Chat) -> None:
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.say("batal")
    await asn.press("Buang draf")
    assert "Draf pendaftaran pekerja dibuang" in asn.text
    assert not any("Lanjutkan" in label for label in asn.labels())
    await asn.say("/daftar")
    assert "draf" not in asn.text  # a fresh start, no "continue or start again"


async def test_batal_before_any_answer_says_nothing_was_kept(asn: Chat) -> None:
    await asn.say("/daftar")
    await asn.say("batal")
    assert "Belum ada jawaban, jadi tidak ada yang disimpan atau dikirim" in asn.text
    assert not any("Lanjutkan" in label for label in asn.labels())


async def test_a_button_pressed_after_the_enrollment_was_sent_says_it_was_sent(
    asn: Chat,
) -> None:
    await asn.say("/daftar")
    relationship = next(o.id for o in asn.options if "Bekerja untuk saya" in o.label)
    await asn.press("Bekerja untuk saya")
    await asn.say("batal")
    await asn.press("Buang draf")
    await asn.enroll_until_summary()
    send = next(o.id for o in asn.options if "Kirim ke PIC" in o.label)
    await asn.press_id(send)
    assert "sudah masuk" in asn.text
    await asn.press_id(send)  # a double tap, or the old message's button later
    assert "Pendaftaran itu sudah dikirim ke PIC" in asn.text
    assert any("Pekerja saya" in label for label in asn.labels())
    async with asn.engine._database.connect() as connection:  # one enrollment, not two
        assert await connection.scalar(select(func.count()).select_from(Sponsorship)) == 1
    # A button of an earlier, abandoned enrollment is only "no longer valid".
    await asn.press_id(relationship)
    assert "sudah tidak berlaku" in asn.text and "sudah dikirim" not in asn.text
