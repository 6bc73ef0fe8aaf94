"""What BPJS needs about a worker, asked and corrected (issue 12 items 5 and 6).

Relationship and occupation are asked apart; "Lainnya" asks the occupation as
text; place of birth and the address parts are asked; the PIC's return for any
of them can be answered; the privacy notice lists what is stored.
"""

from __future__ import annotations

import io

import pytest
from openpyxl import load_workbook
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Occupation, Relationship, ReturnReason, SponsorshipStatus
from storage.collective_file import HEADER_ROW
from storage.models import Sponsorship, Worker
from tests.fakes.chat import WORKER_NIK, Chat
from tests.fakes.workbench import Office, build_office


@pytest.fixture
def chat(asn: Chat) -> Chat:
    """A registered ASN."""
    return asn


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker)


async def _rest_of_enrollment(chat: Chat) -> None:
    """From the name question to the summary, with the usual answers."""
    await chat.say("Siti Aminah")
    await chat.say(WORKER_NIK)
    await chat.press("Ya, benar")
    await chat.say("Bengkulu")
    await chat.press("Lewati")
    await chat.say("Jl. Melati No. 5 RT 02/RW 01")
    await chat.say("Pasar Baru")
    await chat.say("Teluk Segara")
    await chat.say("Kota Bengkulu")
    await chat.press("Bulanan")
    await chat.press("Desember 2026")


async def _worker_and_sponsorship(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> tuple[Worker, Sponsorship]:
    async with sessionmaker() as session:
        worker = (await session.execute(select(Worker))).scalar_one()
        sponsorship = (await session.execute(select(Sponsorship))).scalar_one()
    return worker, sponsorship


async def test_other_occupation_is_asked_as_text_and_kept_apart_from_the_relationship(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.say("/daftar")
    assert "Apa hubungan orang" in chat.question.text
    await chat.press("Tetangga")
    assert "Apa pekerjaan orang itu" in chat.question.text
    assert "Anggota keluarga" not in chat.labels()  # a relationship, not an occupation
    await chat.press("Lainnya")
    assert "Ketik pekerjaan orang itu" in chat.question.text
    question = chat.question.text
    await chat.say("123")
    assert "harus berisi huruf" in chat.replies[0].text
    assert chat.question.text == question
    await chat.say("  buruh   cuci ")
    assert "nama lengkap pekerja" in chat.question.text
    await _rest_of_enrollment(chat)
    summary = chat.question.text
    assert "Hubungan dengan Anda: Tetangga / warga" in summary
    assert "Pekerjaan: buruh cuci" in summary
    await chat.press("Kirim ke PIC")
    _, sponsorship = await _worker_and_sponsorship(sessionmaker)
    assert sponsorship.relationship_to_asn is Relationship.NEIGHBOUR
    assert sponsorship.occupation is Occupation.OTHER
    assert sponsorship.occupation_text == "buruh cuci"


async def test_an_occupation_typed_instead_of_chosen_is_taken(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.say("/daftar")
    await chat.press("Anggota keluarga")
    await chat.say("pedagang sayur keliling")  # not on the list: no refusal
    assert "nama lengkap pekerja" in chat.question.text
    await _rest_of_enrollment(chat)
    assert "Pekerjaan: pedagang sayur keliling" in chat.question.text
    await chat.press("Kirim ke PIC")
    _, sponsorship = await _worker_and_sponsorship(sessionmaker)
    assert sponsorship.relationship_to_asn is Relationship.FAMILY
    assert (sponsorship.occupation, sponsorship.occupation_text) == (
        Occupation.OTHER,
        "pedagang sayur keliling",
    )


async def test_choosing_a_listed_occupation_after_other_forgets_the_typed_one(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.say("/daftar")
    await chat.press("Bekerja untuk saya")
    await chat.say("penjahit")
    await _rest_of_enrollment(chat)
    await chat.press("Ubah data")
    await chat.press("Pekerjaan")
    await chat.press("Sopir")
    assert "Pekerjaan: Sopir" in chat.question.text
    await chat.press("Kirim ke PIC")
    _, sponsorship = await _worker_and_sponsorship(sessionmaker)
    assert (sponsorship.occupation, sponsorship.occupation_text) == (Occupation.DRIVER, None)


async def test_place_of_birth_and_every_address_part_are_asked_and_stored(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.say("/daftar")
    await chat.press("Bekerja untuk saya")
    await chat.press("Asisten rumah tangga")
    await chat.say("Siti Aminah")
    await chat.say(WORKER_NIK)
    await chat.press("Ya, benar")
    assert "tempat lahir" in chat.question.text
    await chat.say("Bengkulu")
    await chat.press("Lewati")
    assert "alamat tempat tinggal" in chat.question.text
    question = chat.question.text
    await chat.say("12 / 05")
    assert "bukan hanya angka" in chat.replies[0].text
    assert chat.question.text == question
    await chat.say("Jl. Melati No. 5 RT 02/RW 01")
    await chat.say("Pasar Baru")
    await chat.say("Teluk Segara")
    assert "kabupaten/kota" in chat.question.text
    await chat.say("Kota Bengkulu")
    await chat.press("Bulanan")
    await chat.press("Desember 2026")
    summary = chat.question.text
    assert "Tempat, tanggal lahir: Bengkulu, 7 Agustus 1990" in summary
    assert "Alamat: Jl. Melati No. 5 RT 02/RW 01" in summary
    assert "Kabupaten/kota: Kota Bengkulu" in summary
    await chat.press("Kirim ke PIC")
    worker, _ = await _worker_and_sponsorship(sessionmaker)
    assert (worker.birth_place, worker.street_address) == (
        "Bengkulu",
        "Jl. Melati No. 5 RT 02/RW 01",
    )
    assert (worker.village, worker.district, worker.regency) == (
        "Pasar Baru",
        "Teluk Segara",
        "Kota Bengkulu",
    )


async def test_a_return_asking_for_the_occupation_can_be_answered_with_text(
    office: Office,
) -> None:
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    assert "Pekerjaan: Asisten rumah tangga" in office.pic.text
    assert "Hubungan dengan ASN: Bekerja untuk ASN (rumah tangganya)" in office.pic.text
    await office.pic.press("Kembalikan")
    await office.pic.press("Pekerjaan belum jelas")
    (row,) = await office.sponsorships()
    assert row.return_reason_code is ReturnReason.OCCUPATION

    await office.asn.say("/pekerja")
    await office.asn.press("Perbaiki: Siti Aminah")
    assert "Pekerjaan belum jelas" in office.asn.text
    await office.asn.press("Ubah")
    await office.asn.press("Pekerjaan")
    await office.asn.press("Lainnya")
    await office.asn.say("Penjaga warung")
    assert "Pekerjaan: Penjaga warung" in office.asn.question.text
    await office.asn.press("Kirim ulang ke PIC")
    (row,) = await office.sponsorships()
    assert row.status is SponsorshipStatus.WAITING_FOR_PIC
    assert (row.occupation, row.occupation_text) == (Occupation.OTHER, "Penjaga warung")

    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    assert "Pekerjaan: Penjaga warung" in office.pic.text


async def test_an_enrollment_from_before_the_address_was_asked_is_completed_before_resending(
    office: Office,
) -> None:
    """Rows migrated by 0009 have no place of birth, street or regency, and a family
    member no occupation: the PIC's return for the address gets them all asked."""
    await office.enroll()
    async with office.sessionmaker.begin() as session:
        await session.execute(
            update(Worker).values(birth_place=None, street_address=None, regency=None)
        )
        await session.execute(
            update(Sponsorship).values(relationship_to_asn=Relationship.FAMILY, occupation=None)
        )
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    assert "Pekerjaan: belum diisi" in office.pic.text
    await office.pic.press("Kembalikan")
    await office.pic.press("Alamat belum lengkap")

    await office.asn.say("/pekerja")
    await office.asn.press("Perbaiki: Siti Aminah")
    assert "Alamat: -" in office.asn.question.text
    await office.asn.press("Kirim ulang ke PIC")
    assert "“Pekerjaan” belum diisi" in office.asn.text
    await office.asn.press("Nelayan")
    await office.asn.press("Kirim ulang ke PIC")
    assert "“Tempat lahir” belum diisi" in office.asn.text
    await office.asn.say("Seluma")
    await office.asn.press("Kirim ulang ke PIC")
    await office.asn.say("Dusun II RT 03")
    await office.asn.press("Kirim ulang ke PIC")
    assert "“Kabupaten/kota” belum diisi" in office.asn.text
    await office.asn.say("Kabupaten Seluma")
    summary = office.asn.question.text
    assert "Tempat, tanggal lahir: Seluma, 7 Agustus 1990" in summary
    assert "Alamat: Dusun II RT 03" in summary
    await office.asn.press("Kirim ulang ke PIC")
    assert "kembali menunggu pemeriksaan" in office.asn.text
    (row,) = await office.sponsorships()
    assert row.status is SponsorshipStatus.WAITING_FOR_PIC
    assert row.occupation is Occupation.FISHER
    async with office.sessionmaker() as session:
        worker = (await session.execute(select(Worker))).scalar_one()
    assert (worker.birth_place, worker.street_address, worker.regency) == (
        "Seluma",
        "Dusun II RT 03",
        "Kabupaten Seluma",
    )


async def test_the_privacy_notice_names_what_the_enrollment_asks(guest: Chat) -> None:
    await guest.say("/start")
    await guest.press("Daftar sebagai ASN")
    notice = guest.question.text
    for collected in (
        "NIK",
        "tempat dan tanggal lahir",
        "jalan dan RT/RW, desa/kelurahan, kecamatan, kabupaten/kota",
        "nomor HP",
        "pekerjaan",
        "hubungannya dengan Anda",
        "cara bayar",
        "bukti bayar",
    ):
        assert collected in notice


async def test_the_pics_file_has_the_typed_occupation_the_relationship_and_the_address(
    office: Office,
) -> None:
    """Issue 12 item 16: 'Pekerjaan' held the relationship; programme and income were missing."""
    asn = office.asn
    await asn.say("/daftar")
    await asn.press("Anggota keluarga")
    await asn.press("Lainnya")
    await asn.say("=1+1 buruh cuci")  # formula-looking text stays text in the file
    await _rest_of_enrollment(asn)
    await asn.press("Kirim ke PIC")
    await office.worker_consents()  # the PIC accepts only with the worker's consent
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Terima")
    await office.pic.say("pic")
    await office.pic.press("Ekspor")
    (document,) = office.pic.documents
    sheet = load_workbook(io.BytesIO(document.content)).active
    assert sheet is not None
    header = [cell.value for cell in sheet[HEADER_ROW]]
    row = dict(zip(header, sheet[HEADER_ROW + 1], strict=True))
    assert row["Jenis Pekerjaan"].value == "=1+1 buruh cuci"
    assert row["Jenis Pekerjaan"].data_type == "s"
    assert row["Hubungan dengan ASN"].value == "Anggota keluarga ASN"
    assert row["Program"].value == "JKK+JKM"
    assert row["Penghasilan Dilaporkan (Rp)"].value == 1_000_000
    assert row["Tempat Lahir"].value == "Bengkulu"
    assert row["Alamat (Jalan, RT/RW)"].value == "Jl. Melati No. 5 RT 02/RW 01"
    assert row["Kabupaten/Kota"].value == "Kota Bengkulu"
    assert row["Lokasi Kerja (Kabupaten/Kota)"].value == "Kota Bengkulu"


async def test_editing_the_address_asks_its_four_parts_then_returns_to_the_summary(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.enroll_until_summary()
    await chat.press("Ubah data")
    assert len(chat.labels()) <= 10  # a WhatsApp list holds 10 rows
    await chat.press("Alamat")
    assert "alamat tempat tinggal" in chat.question.text
    await chat.say("Jl. Kenanga No. 9 RT 01/RW 03")
    assert "desa/kelurahan" in chat.question.text
    await chat.say("Pasar Baru")
    await chat.say("Teluk Segara")
    await chat.say("Kota Bengkulu")
    summary = chat.question.text
    assert "Periksa data pekerja" in summary
    assert "Alamat: Jl. Kenanga No. 9 RT 01/RW 03" in summary
    assert "Kabupaten/kota: Kota Bengkulu" in summary
    await chat.press("Ubah data")  # another field afterwards returns at once
    await chat.press("Tempat lahir")
    await chat.say("Seluma")
    assert "Tempat, tanggal lahir: Seluma, 7 Agustus 1990" in chat.question.text
    await chat.press("Kirim ke PIC")
    worker, _ = await _worker_and_sponsorship(sessionmaker)
    assert (worker.street_address, worker.village, worker.regency) == (
        "Jl. Kenanga No. 9 RT 01/RW 03",
        "Pasar Baru",
        "Kota Bengkulu",
    )
