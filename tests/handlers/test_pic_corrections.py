"""Issue 12 item 21: a corrected enrollment shows the PIC what changed and tells them it is
back; a typed return reason is kept in the audit entry."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import AuditLog
from tests.fakes.workbench import PIC_ID, Office, build_office


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker)


async def audit_details(office: Office, action: str) -> list[dict[str, object]]:
    async with office.sessionmaker() as session:
        rows = await session.execute(
            select(AuditLog.details).where(AuditLog.action == action).order_by(AuditLog.id)
        )
        return [dict(details) for details in rows.scalars()]


async def return_with(office: Office, reason: str) -> None:
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Kembalikan")
    await office.pic.press(reason)


async def test_a_corrected_enrollment_tells_the_pic_what_changed(office: Office) -> None:
    await office.enroll()
    await return_with(office, "Alamat")
    asn = office.asn
    await asn.say("/pekerja")
    await asn.press("Perbaiki: Siti Aminah")
    await asn.press("Ubah")
    await asn.press("Nama")
    await asn.say("Siti Aminah Rahayu")
    await asn.press("Ubah")
    await asn.press("Alamat")  # street, village, district, regency in turn
    await asn.say("Jl. Melati No. 5 RT 02/RW 01")
    await asn.say("Sukamakmur")
    await asn.say("Ciawi")
    await asn.say("Kabupaten Bogor")
    await asn.press("Kirim ulang ke PIC")
    assert "kembali menunggu pemeriksaan PIC" in asn.text

    # The PIC is told at once that it is back, and what changed.
    (notice,) = await office.outbox("resubmitted")
    assert notice.recipient == PIC_ID
    assert "Budi Santoso memperbaiki pendaftaran Siti Aminah Rahayu" in notice.body
    assert "Dikembalikan karena: Alamat belum lengkap" in notice.body
    assert "Yang diubah: Nama, Alamat (jalan s.d. kabupaten)" in notice.body
    assert "3201" not in notice.body  # no NIK, not even masked
    assert await audit_details(office, "enrollment.resubmit") == [{"changed": ["name", "address"]}]
    # The review says why it came back and what the ASN changed.
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    text = office.pic.text
    assert "Sudah diperbaiki ASN 1 kali" in text
    assert "Dikembalikan karena: Alamat belum lengkap" in text
    assert "Yang diubah ASN: Nama, Alamat (jalan s.d. kabupaten)" in text

    # Returned again and sent back unchanged: said so, in a notice of its own.
    await office.pic.press("Kembalikan")
    await office.pic.press("Nama tidak sesuai")
    await asn.say("/pekerja")
    await asn.press("Perbaiki: Siti Aminah Rahayu")
    await asn.press("Kirim ulang ke PIC")
    first, second = await office.outbox("resubmitted")
    assert first.dedupe_key != second.dedupe_key
    assert "Yang diubah: tidak ada (dikirim ulang tanpa perubahan)" in second.body
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    assert "Sudah diperbaiki ASN 2 kali" in office.pic.text
    assert "Dikembalikan karena: Nama tidak sesuai KTP" in office.pic.text
    assert "Yang diubah ASN: tidak ada" in office.pic.text


async def test_a_typed_return_reason_is_kept_in_the_audit_entry(office: Office) -> None:
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Kembalikan")
    await office.pic.say("Foto KTP buram, kirim ulang ke PIC")
    await office.enroll(nik="1771010101800003", name="Joko Susilo")
    await return_with(office, "Nama tidak sesuai")
    assert await audit_details(office, "enrollment.return") == [
        {"reason_code": None, "reason": "Foto KTP buram, kirim ulang ke PIC"},
        {"reason_code": "name"},
    ]
