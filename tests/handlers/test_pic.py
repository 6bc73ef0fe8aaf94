"""PRODUCT 4.5 through the real engine: the PIC's queue, returns, corrections, roles, scope."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import ReturnReason, SponsorshipStatus
from storage.audit import Actor
from storage.models import AuditLog, InviteCode, Pic, SubmissionBatch
from storage.roles import create_invite
from tests.fakes.chat import OTHER_NIK, Chat
from tests.fakes.workbench import Office, appoint_pic, build_office


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker)


async def test_pic_menu_shows_the_opd_summary(office: Office) -> None:
    await office.enroll_two()
    await office.pic.say("/start")
    assert any("Menu PIC (Dinas Kesehatan)" in label for label in office.pic.labels())
    await office.pic.press("Menu PIC")
    text = office.pic.text
    assert "PIC Dinas Kesehatan" in text
    assert "Menunggu diperiksa: 2" in text
    assert "1 dari 1 ASN terdaftar" in text
    assert "Periksa pendaftaran (2)" in office.pic.labels()[0]


async def test_asn_menu_has_no_pic_entry_and_pic_words_are_refused(office: Office) -> None:
    await office.asn.say("/start")
    assert not any("Menu PIC" in label for label in office.asn.labels())
    await office.asn.say("pic")
    assert "khusus untuk PIC OPD" in office.asn.text
    # A forged button press of the PIC menu writes nothing.
    await office.enroll()
    await office.asn.press_id("g:pic_export")
    assert "khusus untuk PIC OPD" in office.asn.text
    async with office.sessionmaker() as session:
        assert (await session.execute(select(SubmissionBatch))).first() is None
    sponsorship = (await office.sponsorships())[0]
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC


async def test_accepting_the_queue_one_by_one(office: Office) -> None:
    await office.enroll_two()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    text = office.pic.text
    assert "Pendaftaran menunggu pemeriksaan: 2" in text
    assert "Siti Aminah" in text and "3201********0001" in text
    assert "3201014708900001" not in text
    assert "NIP 198503122010011002" in text
    await office.pic.press("Terima")
    assert "Siti Aminah diterima" in office.pic.text
    assert "Joko Susilo" in office.pic.text
    await office.pic.press("Terima")
    assert "Tidak ada pendaftaran yang menunggu" in office.pic.text
    rows = await office.sponsorships()
    assert [row.status for row in rows] == [SponsorshipStatus.ACCEPTED] * 2
    assert all(row.verified_by_pic_id is not None for row in rows)
    async with office.sessionmaker() as session:
        actions = (
            await session.execute(select(AuditLog.action, AuditLog.actor_type, AuditLog.record_id))
        ).all()
    accepted = [a for a in actions if a[0] == "enrollment.accept"]
    assert sorted(a[2] for a in accepted) == sorted(str(r.id) for r in rows)
    assert {a[1] for a in accepted} == {"pic"}


async def test_skip_keeps_the_enrollment_waiting(office: Office) -> None:
    await office.enroll_two()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Lewati")
    assert "Joko Susilo" in office.pic.text
    await office.pic.press("Selesai")
    statuses = [row.status for row in await office.sponsorships()]
    assert statuses == [SponsorshipStatus.WAITING_FOR_PIC] * 2


async def test_return_with_common_reason_tells_the_asn_and_the_asn_corrects(
    office: Office,
) -> None:
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Kembalikan")
    assert "Mengapa dikembalikan" in office.pic.text
    await office.pic.press("Nama tidak sesuai KTP")
    assert "Dikembalikan ke ASN dengan alasan: Nama tidak sesuai KTP" in office.pic.text
    (row,) = await office.sponsorships()
    assert row.status is SponsorshipStatus.RETURNED
    assert row.return_reason_code is ReturnReason.NAME
    (notice,) = await office.outbox("returned")
    assert notice.recipient == "1001"
    assert "Nama tidak sesuai KTP" in notice.body and "Siti Aminah" in notice.body

    await office.asn.say("/pekerja")
    assert "Dikembalikan PIC, alasan: Nama tidak sesuai KTP" in office.asn.text
    await office.asn.press("Perbaiki: Siti Aminah")
    assert "Nama tidak sesuai KTP" in office.asn.text
    assert "Kirim ulang ke PIC" in office.asn.labels()[0]
    await office.asn.press("Ubah")
    await office.asn.press("Nama")
    await office.asn.say("Siti Aminah Rahayu")
    assert "Siti Aminah Rahayu" in office.asn.text
    await office.asn.press("Kirim ulang ke PIC")
    assert "kembali menunggu pemeriksaan PIC Dinas Kesehatan" in office.asn.text
    (row,) = await office.sponsorships()
    assert row.status is SponsorshipStatus.WAITING_FOR_PIC
    assert row.correction_count == 1

    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    assert "Siti Aminah Rahayu" in office.pic.text
    assert "Sudah diperbaiki ASN 1 kali" in office.pic.text


async def test_correction_to_a_taken_nik_offers_retype_or_cancel_only(office: Office) -> None:
    """A correction keeps its worker: no "another worker", and a retype returns to the summary."""
    await office.enroll_two()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Kembalikan")
    await office.pic.press("Alamat")
    await office.asn.say("/pekerja")
    await office.asn.press("Perbaiki: Siti Aminah")
    await office.asn.press("Ubah")
    await office.asn.press("NIK")
    await office.asn.say(OTHER_NIK)  # Joko's, enrolled by the same ASN
    assert "Anda sudah mendaftarkan pekerja ini" in office.asn.question.text
    assert office.asn.labels() == ["✏️ Ketik ulang NIK", "❌ Batalkan"]
    await office.asn.press("Ketik ulang NIK")
    await office.asn.say("3201014708900002")
    await office.asn.press("Ya, benar")
    assert "3201********0002" in office.asn.question.text
    assert "Kirim ulang ke PIC" in office.asn.labels()[0]  # back at the summary
    await office.asn.press("Ubah")
    await office.asn.press("NIK")
    await office.asn.say(OTHER_NIK)
    await office.asn.press("Batalkan")
    assert "Perbaikan dibatalkan" in office.asn.text
    rows = await office.sponsorships()
    assert [row.status for row in rows] == [
        SponsorshipStatus.RETURNED,
        SponsorshipStatus.WAITING_FOR_PIC,
    ]


async def test_a_returned_enrollment_cannot_be_corrected_twice(office: Office) -> None:
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Kembalikan")
    await office.pic.press("Alamat")
    await office.asn.say("/pekerja")
    fix_button = next(o.id for o in office.asn.options if "Perbaiki" in o.label)
    await office.asn.press_id(fix_button)
    await office.asn.press("Kirim ulang ke PIC")
    # The same button again, after the correction went back to the queue.
    await office.asn.press_id(fix_button)
    assert "tidak sedang dikembalikan" in office.asn.text
    assert "menunggu pemeriksaan PIC" in office.asn.text
    (row,) = await office.sponsorships()
    assert row.correction_count == 1
    assert row.status is SponsorshipStatus.WAITING_FOR_PIC


async def test_typed_reason_and_a_reason_too_short(office: Office) -> None:
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Kembalikan")
    await office.pic.say("ok")
    assert "3 sampai 200 karakter" in office.pic.text
    assert "Mengapa dikembalikan" in office.pic.text
    await office.pic.say("Foto KTP buram, kirim ulang ke PIC")
    (row,) = await office.sponsorships()
    assert row.status is SponsorshipStatus.RETURNED
    assert row.return_reason == "Foto KTP buram, kirim ulang ke PIC"
    assert row.return_reason_code is None


async def test_other_opd_pic_sees_nothing_and_cannot_act(office: Office) -> None:
    await office.enroll()
    await office.other_pic.say("pic")
    assert "PIC Dinas Pendidikan dan Kebudayaan" in office.other_pic.text
    assert "Menunggu diperiksa: 0" in office.other_pic.text
    await office.other_pic.press("Periksa pendaftaran")
    assert "Tidak ada pendaftaran yang menunggu" in office.other_pic.text
    # Dinas Kesehatan's PIC accepts and exports; the other PIC forges its batch button.
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Terima")
    await office.pic.say("pic")
    await office.pic.press("Ekspor")
    async with office.sessionmaker() as session:
        batch_id = (await session.execute(select(SubmissionBatch.id))).scalar_one()
    await office.other_pic.press_id(f"g:pic_submit:{batch_id}")
    assert "Berkas itu tidak ditemukan" in office.other_pic.text
    await office.other_pic.press_id(f"g:pic_batch:{batch_id}")
    assert "Berkas itu tidak ditemukan" in office.other_pic.text
    assert all(reply.document is None for reply in office.other_pic.replies)
    (row,) = await office.sponsorships()
    assert row.status is SponsorshipStatus.ACCEPTED


async def test_two_pics_of_one_opd_do_not_handle_the_same_enrollment_twice(
    office: Office,
) -> None:
    await appoint_pic(office.sessionmaker, office.clock, telegram_id="2002", opd_code="BKL-DINKES")
    second = Chat(office.engine, office.clock, sender="2002")
    await office.enroll()
    for chat in (office.pic, second):
        await chat.say("pic")
        await chat.press("Periksa pendaftaran")
    await office.pic.press("Terima")
    # The second PIC's "return" comes after the accept: told at once, before any reason.
    await second.press("Kembalikan")
    assert "Siti Aminah sudah diproses PIC lain" in second.text
    assert "Mengapa dikembalikan" not in second.text
    (row,) = await office.sponsorships()
    assert row.status is SponsorshipStatus.ACCEPTED
    assert await office.outbox("returned") == []


async def test_export_with_nothing_accepted(office: Office) -> None:
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Ekspor")
    assert "Belum ada pendaftaran yang diterima" in office.pic.text
    assert all(reply.document is None for reply in office.pic.replies)
    async with office.sessionmaker() as session:
        assert (await session.execute(select(SubmissionBatch))).first() is None


async def test_invite_code_typed_or_by_deep_link(office: Office) -> None:
    opd_id = await office.opd_id("BKL-DIKBUD")
    async with office.sessionmaker.kw["bind"].begin() as connection:
        first = await create_invite(
            connection, opd_id=opd_id, actor=Actor.admin("admin"), now=office.clock()
        )
        second = await create_invite(
            connection, opd_id=opd_id, actor=Actor.admin("admin"), now=office.clock()
        )
    newcomer = Chat(office.engine, office.clock, sender="4001")
    await newcomer.say("PIC-ZZZZZZZZ")
    assert "Kode undangan itu tidak dikenal" in newcomer.text
    await newcomer.say(first.lower())
    assert "Anda kini PIC Dinas Pendidikan dan Kebudayaan" in newcomer.text
    stranger = Chat(office.engine, office.clock, sender="4002")
    await stranger.say(first)
    assert "sudah dipakai" in stranger.text
    await stranger.say(f"/start {second}")
    assert "Anda kini PIC Dinas Pendidikan dan Kebudayaan" in stranger.text
    async with office.sessionmaker() as session:
        used = (await session.execute(select(InviteCode.used_at))).scalars().all()
        pics = (await session.execute(select(Pic).where(Pic.opd_id == opd_id))).scalars().all()
    assert all(moment is not None for moment in used)
    assert len(pics) == 3  # the appointed one and two by invite


async def test_guessing_invite_codes_is_throttled(office: Office) -> None:
    opd_id = await office.opd_id("BKL-DIKBUD")
    async with office.sessionmaker.kw["bind"].begin() as connection:
        code = await create_invite(
            connection, opd_id=opd_id, actor=Actor.admin("admin"), now=office.clock()
        )
    guesser = Chat(office.engine, office.clock, sender="4003")
    for guess in ("PIC-AAAAAAAA", "PIC-BBBBBBBB", "PIC-CCCCCCCC", "PIC-DDDDDDDD", "PIC-EEEEEEEE"):
        await guesser.say(guess)
        assert "tidak dikenal" in guesser.text
    await guesser.say(code)  # even the right code now waits
    assert "Terlalu banyak kode undangan yang salah" in guesser.text
    office.clock.advance(timedelta(hours=1, minutes=1))
    await guesser.say(code)
    assert "Anda kini PIC Dinas Pendidikan dan Kebudayaan" in guesser.text
