"""Regression tests for odd text and forged buttons that crashed a step (issue 11).

Each answer to bad input is a specific message and the same question again. On
PostgreSQL (TEST_DATABASE_URL) the NUL and 20-digit cases also prove the
database never sees what it refuses.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from handlers.types import EventKind
from storage.models import ChannelAccount, Worker
from tests.fakes.chat import WORKER_NIK, Chat
from tests.fakes.workbench import Office, activate, build_office

TWENTY_DIGITS = "12345678901234567890"


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker)


async def test_superscript_two_at_a_question_with_buttons_asks_again(asn: Chat) -> None:
    await asn.say("/daftar")
    question = asn.question
    await asn.say("²")
    assert "tidak ada di pilihan" in asn.replies[0].text
    assert asn.question == question


@pytest.mark.parametrize("typed", ["١", "３", "2²"])
async def test_other_scripts_digits_are_not_option_numbers(asn: Chat, typed: str) -> None:
    await asn.say("/daftar")
    question = asn.question
    await asn.say(typed)
    assert "tidak ada di pilihan" in asn.replies[0].text
    assert asn.question == question


@pytest.mark.parametrize("typed", ["²", "12/0²/1990", "١٢-٠٥-١٩٩٠", "12-05-1９90"])
async def test_superscript_two_in_a_date_asks_again(asn: Chat, typed: str) -> None:
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.press("Asisten rumah tangga")
    await asn.say("Siti Aminah")
    await asn.say(WORKER_NIK)
    question = asn.question
    await asn.say(typed)
    assert "Format tanggal tidak dikenali" in asn.replies[0].text
    assert asn.question == question
    # Nothing was lost: the same date in ASCII digits goes on.
    await asn.say("07-08-1990")
    assert "tempat lahir" in asn.text


async def test_a_huge_day_in_a_date_is_impossible_not_a_crash(asn: Chat) -> None:
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.press("Asisten rumah tangga")
    await asn.say("Siti Aminah")
    await asn.say(WORKER_NIK)
    question = asn.question
    await asn.say(f"{TWENTY_DIGITS}-05-1990")
    assert "Format tanggal tidak dikenali" in asn.replies[0].text
    assert asn.question == question


async def test_forged_fix_button_with_superscript_two(asn: Chat) -> None:
    await asn.press_id("g:fix:²")
    assert "Pendaftaran itu tidak ditemukan" in asn.replies[0].text


@pytest.mark.parametrize(
    ("who", "button", "answer"),
    [
        ("asn", f"g:fix:{TWENTY_DIGITS}", "Pendaftaran itu tidak ditemukan"),
        ("pic", f"g:pic_submit:{TWENTY_DIGITS}", "Berkas itu tidak ditemukan"),
        ("pic", f"g:pic_batch:{TWENTY_DIGITS}", "Berkas itu tidak ditemukan"),
        ("pic", f"g:pic_apply:{TWENTY_DIGITS}", "Impor itu tidak ditemukan"),
        ("pic", f"g:pic_discard:{TWENTY_DIGITS}", "Impor itu tidak ditemukan"),
        ("pic", "g:pic_apply:2147483648", "Impor itu tidak ditemukan"),
        ("pic", "g:pic_batch:²", "Berkas itu tidak ditemukan"),
    ],
)
async def test_twenty_digit_id_in_button_data_is_not_found(
    office: Office, who: str, button: str, answer: str
) -> None:
    chat = office.asn if who == "asn" else office.pic
    await chat.press_id(button)
    assert answer in chat.replies[0].text
    # The conversation goes on.
    await chat.say("menu")
    assert chat.options


@pytest.mark.parametrize("payload", ["consent:yes:²", f"consent:no:{TWENTY_DIGITS}"])
async def test_forged_consent_payload_finds_no_request(office: Office, payload: str) -> None:
    worker = Chat(
        office.engine,
        office.clock,
        sender="6281298765432",
        channel=Channel.WHATSAPP,
        sender_phone="+6281298765432",
    )
    await worker.press_id(payload)
    assert "Tidak ada permintaan persetujuan" in worker.replies[0].text


async def test_nul_in_a_name_is_dropped_before_the_database(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await asn.enroll_until_summary(name="Siti\x00 Ami\x00nah")
    assert "Siti Aminah" in asn.text
    await asn.press("Kirim ke PIC")
    async with sessionmaker() as session:
        names = (await session.execute(select(Worker.full_name))).scalars().all()
    assert names == ["Siti Aminah"]


async def test_nul_and_lone_surrogate_in_a_display_name(
    guest: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await guest.say("/start", display_name="Bu\x00di \ud83d Santoso")
    assert guest.options
    async with sessionmaker() as session:
        names = (await session.execute(select(ChannelAccount.display_name))).scalars().all()
    assert names == ["Budi  Santoso"]


async def test_superscript_two_as_months_and_amount_and_a_forged_receipt_ask_again(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    asn = office.asn
    await asn.say("bayar")
    months = asn.question
    await asn.say("²")
    assert "Ketik jumlah bulan sebagai angka" in asn.replies[0].text
    assert asn.question == months
    await asn.say("3")
    amount = asn.question
    for typed in ("²", "Rp " + TWENTY_DIGITS):
        await asn.say(typed)
        assert "Ketik jumlahnya dalam rupiah" in asn.replies[0].text
        assert asn.question == amount
    await asn.say("50.400")
    assert "bukti pembayaran" in asn.text
    receipt = asn.question
    # No platform issues a file reference this long; the receipt column could not hold it.
    await asn._send(kind=EventKind.PHOTO, file_ref="A" * 300)
    assert "harus berupa foto atau berkas" in asn.replies[0].text
    assert asn.question == receipt
    await asn._send(kind=EventKind.PHOTO, file_ref="AgACAgUAAxkBAAIB")
    assert "Bukti bayar: ada" in asn.text
