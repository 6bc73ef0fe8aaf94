"""PRODUCT 4.6 on the engine: consent request and answer, STATUS, HAPUS, unknown numbers."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import (
    Channel,
    ConsentMethod,
    ConsentSubject,
    OutboxStatus,
    SponsorshipStatus,
    WorkerConsent,
)
from storage.models import Asn, AuditLog, ConsentRecord, Outbox, Worker
from storage.worker_side import ERASED_MASK, ERASED_NAME
from tests.fakes.chat import WORKER_NIK, Chat
from tests.fakes.workbench import Office, activate, build_office

#: The worker's phone as the ASN types it in `enroll_until_summary`, and as WhatsApp sends it.
WORKER_WA_ID = "6281298765432"


def worker_chat(office: Office, wa_id: str = WORKER_WA_ID) -> Chat:
    return Chat(
        office.engine,
        office.clock,
        sender=wa_id,
        channel=Channel.WHATSAPP,
        sender_phone="+" + wa_id,
    )


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)


async def test_enrollment_sends_the_worker_a_consent_request(office: Office) -> None:
    await office.enroll()
    assert "permintaan persetujuan lewat WhatsApp ke Siti Aminah" in office.asn.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.PENDING
    (request,) = await office.outbox("consent_request")
    assert request.channel is Channel.WHATSAPP
    assert request.recipient == WORKER_WA_ID
    assert request.template == "consent_request"
    assert request.params["sponsorship_id"] == sponsorship.id
    assert request.params["asn"] == "Budi Santoso"
    assert "Balas YA atau TIDAK" in request.body
    # The ASN and the PIC see "waiting for the worker" on the enrollment.
    await office.asn.say("pekerja")
    assert "menunggu" in office.asn.text.lower()


async def test_without_a_worker_channel_nothing_is_requested(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll(consent=False)
    (sponsorship,) = await office.sponsorships()
    assert await office.outbox("consent_request") == []
    assert "permintaan persetujuan lewat WhatsApp" not in office.asn.text
    # The ASN got a Telegram link to forward instead (tests/handlers/test_consent.py).
    assert sponsorship.consent_requested_via is ConsentMethod.TELEGRAM_LINK


async def test_worker_consents_with_the_template_button(office: Office) -> None:
    await office.enroll()
    (sponsorship,) = await office.sponsorships()
    worker = worker_chat(office)
    await worker.press_id(f"consent:yes:{sponsorship.id}")
    assert "Persetujuan Anda sudah dicatat" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.GIVEN
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC
    async with office.sessionmaker() as session:
        record = (
            await session.execute(
                select(ConsentRecord).where(ConsentRecord.subject == ConsentSubject.WORKER)
            )
        ).scalar_one()
        audit = (
            await session.execute(
                select(AuditLog).where(AuditLog.action == "sponsorship.worker_consent")
            )
        ).scalar_one()
    assert record.granted is True
    assert record.channel is Channel.WHATSAPP
    assert record.sponsorship_id == sponsorship.id
    assert record.text_version.startswith("worker-consent-")
    assert record.method is ConsentMethod.WHATSAPP
    assert sponsorship.consent_method is ConsentMethod.WHATSAPP
    assert audit.details == {
        "granted": True,
        "text_version": record.text_version,
        "method": "whatsapp",
    }
    (told,) = await office.outbox("consent_answered")
    assert told.recipient == "1001"
    assert "Siti Aminah menyetujui" in told.body
    # A second answer does not change the first.
    await worker.say("tidak")
    assert "sudah kami catat sebelumnya" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.GIVEN


async def test_worker_refuses_by_typing_and_the_enrollment_ends(office: Office) -> None:
    await office.enroll()
    worker = worker_chat(office)
    await worker.say("halo")
    # Any message first asks the pending question again, with its buttons.
    assert "Apakah Anda setuju" in worker.text
    assert [o.label for o in worker.question.options] == ["YA", "TIDAK"]
    await worker.say("Tidak")
    assert "Pendaftaran Anda dibatalkan" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.REFUSED
    assert sponsorship.status is SponsorshipStatus.ENDED
    assert sponsorship.end_reason == "worker_refused"
    (told,) = await office.outbox("consent_answered")
    assert "menolak" in told.body
    # The PIC's queue no longer holds it.
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    assert "Siti Aminah" not in office.pic.text


async def test_a_forged_button_of_another_workers_enrollment_finds_nothing(office: Office) -> None:
    await office.enroll()
    (sponsorship,) = await office.sponsorships()
    stranger = worker_chat(office, wa_id="6281311112222")
    await stranger.press_id(f"consent:no:{sponsorship.id}")
    assert "Tidak ada permintaan persetujuan" in stranger.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.PENDING
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC


async def test_ya_typed_by_an_asn_is_just_the_menu(office: Office) -> None:
    await office.enroll()
    await office.asn.say("ya")
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.PENDING
    assert "Menu" in office.asn.text or "menu" in office.asn.text


async def test_status_shows_only_the_workers_own_record_masked(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    worker = worker_chat(office)
    await worker.press_id("consent:yes:1")
    await worker.say("STATUS")
    assert "Siti Aminah" in worker.text
    assert WORKER_NIK not in worker.text
    assert "3201********0001" in worker.text
    assert "KPJ" in worker.text
    assert "Iuran lunas sampai" in worker.text
    assert [o.label for o in worker.question.options][:2] == ["Status saya", "Hapus data saya"]


async def test_an_unknown_number_gets_the_explanation_and_options(office: Office) -> None:
    stranger = worker_chat(office, wa_id="6281311112222")
    await stranger.say("halo")
    assert "Nomor ini belum kami kenal" in stranger.text
    assert [o.id for o in stranger.question.options] == ["g:register", "g:wstatus", "g:helpmenu"]
    await stranger.press("Cek status")
    assert "tidak terdaftar sebagai pekerja" in stranger.text
    await stranger.say("hapus")
    assert "tidak terdaftar sebagai pekerja" in stranger.text


async def test_hapus_needs_confirmation_and_keeps_data_on_no(office: Office) -> None:
    await office.enroll()
    worker = worker_chat(office)
    await worker.press_id("consent:yes:1")
    await worker.say("HAPUS")
    assert "tidak bisa dibatalkan" in worker.text
    await worker.press("Tidak, batalkan")
    assert "tidak dihapus" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC


async def test_hapus_ends_the_sponsorship_anonymises_and_tells_asn_and_pic(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    worker = worker_chat(office)
    await worker.say("hapus")
    # The consent was still pending: the question comes first; HAPUS still works as a word.
    await worker.press("Ya, hapus")
    assert "Data Anda sudah dihapus" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ENDED
    assert sponsorship.end_reason == "worker_erasure"
    assert sponsorship.kpj == "90000000000"
    async with office.sessionmaker() as session:
        stored = (await session.execute(select(Worker))).scalar_one()
        pending_to_worker = (
            await session.execute(
                select(func.count())
                .select_from(Outbox)
                .where(Outbox.recipient == WORKER_WA_ID, Outbox.status == OutboxStatus.PENDING)
            )
        ).scalar_one()
    assert stored.full_name == ERASED_NAME
    assert stored.nik_masked == ERASED_MASK
    assert stored.nik_ciphertext == b""
    assert stored.phone_e164 is None
    assert stored.erased_at is not None
    assert pending_to_worker == 0
    notices = await office.outbox("worker_erased")
    assert sorted(n.recipient for n in notices) == ["1001", "2001"]
    # The notice names nobody (the name is what was erased): the enrollment date and KPJ.
    assert all("Siti Aminah" not in n.body and "90000000000" in n.body for n in notices)
    assert all("Pekerja yang didaftarkan pada" in n.body for n in notices)
    # The number is unknown now, and the NIK can be enrolled again.
    await worker.say("status")
    assert "tidak terdaftar sebagai pekerja" in worker.text
    await office.enroll()
    sponsorships = await office.sponsorships()
    assert [s.status for s in sponsorships] == [
        SponsorshipStatus.ENDED,
        SponsorshipStatus.WAITING_FOR_PIC,
    ]


async def test_whatsapp_registration_takes_the_phone_from_the_sender(office: Office) -> None:
    asn = worker_chat(office, wa_id="6281377778888")
    await asn.say("halo")
    await asn.press("Daftar sebagai ASN")
    await asn.press("Setuju")
    await asn.say("199001012015031001")
    await asn.say("Rina Marlina")
    await asn.say("kesehatan")
    await asn.press("Dinas Kesehatan")
    # No phone question: the summary comes next, with the sender's number.
    assert "Nomor HP: 0813-7777-8888" in asn.text
    await asn.press("Konfirmasi")
    async with office.sessionmaker() as session:
        stored = (
            await session.execute(select(Asn).where(Asn.nip == "199001012015031001"))
        ).scalar_one()
    assert stored.phone_e164 == "+6281377778888"
