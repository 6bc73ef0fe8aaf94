"""PRODUCT 4.1 through the real engine and database: ASN registration and its bad inputs."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import ConsentPurpose, EmploymentType
from storage.models import Asn, ConsentRecord
from tests.fakes.chat import ASN_NIP, Chat


@pytest.fixture
def chat(guest: Chat) -> Chat:
    """A user who has not registered."""
    return guest


async def _to_nip_step(chat: Chat) -> None:
    await chat.say("/start")
    await chat.press("Daftar sebagai ASN")
    await chat.press("Setuju")
    assert "NIP" in chat.question.text


async def test_registration_lands_in_database_with_consent(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.register()
    assert "Pendaftaran ASN berhasil" in chat.text
    async with sessionmaker() as session:
        asn = (await session.execute(select(Asn))).scalar_one()
        consent = (await session.execute(select(ConsentRecord))).scalar_one()
    assert asn.nip == ASN_NIP
    assert asn.full_name == "Budi Santoso"
    assert asn.employment_type is EmploymentType.PNS
    assert asn.phone_e164 == "+6281234567890"
    assert consent.purpose is ConsentPurpose.PRIVACY_NOTICE
    assert consent.granted and consent.subject_id == asn.id
    assert consent.text_version.startswith("privacy-")


async def test_pppk_nip_is_accepted(chat: Chat) -> None:
    await _to_nip_step(chat)
    await chat.say("199001152023211005")
    assert "PPPK" in chat.text
    assert "nama lengkap" in chat.question.text


async def test_declining_consent_stores_refusal_and_no_asn(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.say("/start")
    await chat.press("Daftar sebagai ASN")
    await chat.press("Tidak setuju")
    assert "Tanpa persetujuan" in chat.text
    async with sessionmaker() as session:
        assert (await session.execute(select(Asn))).first() is None
        consent = (await session.execute(select(ConsentRecord))).scalar_one()
    assert consent.granted is False


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("1985031220100110", "18 angka, yang Anda ketik 16 angka"),
        ("19850312201001100A", "hanya berisi angka"),
        ("198502302010011002", "tanggal itu tidak ada"),
        ("198503122010015002", "harus 1 (laki-laki) atau 2 (perempuan)"),
    ],
)
async def test_bad_nip_explains_and_asks_again(chat: Chat, typed: str, expected: str) -> None:
    await _to_nip_step(chat)
    question = chat.question.text
    await chat.say(typed)
    assert expected in chat.replies[0].text
    assert chat.question.text == question


async def test_nip_registered_from_another_account_is_refused(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.register()
    other = Chat(chat.engine, chat.clock, sender="2002")
    await _to_nip_step(other)
    await other.say(ASN_NIP)
    assert "sudah terdaftar dari akun lain" in other.replies[0].text
    assert "NIP" in other.question.text
    async with sessionmaker() as session:
        assert len((await session.execute(select(Asn))).scalars().all()) == 1


async def test_unknown_opd_offers_closest_matches(chat: Chat) -> None:
    await _to_nip_step(chat)
    await chat.say(ASN_NIP)
    await chat.say("Budi Santoso")
    await chat.say("dinas kesehtan")
    assert "tidak ditemukan" in chat.question.text
    assert "Dinas Kesehatan" in chat.labels()
    await chat.press("Dinas Kesehatan")
    assert chat.question.request_contact


async def test_opd_with_no_close_match_asks_for_other_words(chat: Chat) -> None:
    await _to_nip_step(chat)
    await chat.say(ASN_NIP)
    await chat.say("Budi Santoso")
    await chat.say("zzzqqq")
    assert "tidak ditemukan" in chat.question.text
    assert chat.question.options == ()


async def test_phone_must_be_mobile_and_own(chat: Chat) -> None:
    await _to_nip_step(chat)
    await chat.say(ASN_NIP)
    await chat.say("Budi Santoso")
    await chat.say("kesehatan")
    await chat.press("Dinas Kesehatan")
    await chat.say("021-5550123")
    assert "nomor telepon rumah/kantor" in chat.replies[0].text
    assert chat.question.request_contact
    await chat.share_contact("+6281311112222", own=False)
    assert "kontak orang lain" in chat.replies[0].text
    await chat.share_contact("+6281234567890", own=True)
    assert "Periksa data Anda" in chat.question.text
    assert "Budi Santoso" in chat.question.text  # nothing typed so far was lost


async def test_summary_edit_changes_one_field_and_returns(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _to_nip_step(chat)
    await chat.say(ASN_NIP)
    await chat.say("Budi Santoso")
    await chat.say("kesehatan")
    await chat.press("Dinas Kesehatan")
    await chat.share_contact("081234567890")
    await chat.press("Ubah data")
    await chat.press("Nama")
    await chat.say("Budi Santoso Wibowo")
    assert "Nama: Budi Santoso Wibowo" in chat.question.text
    assert "OPD: Dinas Kesehatan" in chat.question.text
    await chat.press("Konfirmasi")
    async with sessionmaker() as session:
        asn = (await session.execute(select(Asn))).scalar_one()
    assert asn.full_name == "Budi Santoso Wibowo"
