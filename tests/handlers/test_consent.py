"""PRODUCT 4.6, issue 12 item 12: every worker can consent; the PIC sees why an enrollment waits."""

from __future__ import annotations

import hashlib
import re
import zlib
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import (
    Channel,
    ConsentMethod,
    ConsentSubject,
    SponsorshipStatus,
    WorkerConsent,
)
from handlers.types import EventKind, FileRef
from storage import workbench
from storage.models import AuditLog, ConsentLink, ConsentRecord
from storage.workbench import ChangeProblem
from tests.fakes.chat import Chat, engine_config
from tests.fakes.workbench import Office, build_office

WORKER_WA_ID = "6281298765432"


def whatsapp_worker(office: Office) -> Chat:
    return Chat(
        office.engine,
        office.clock,
        sender=WORKER_WA_ID,
        channel=Channel.WHATSAPP,
        sender_phone="+" + WORKER_WA_ID,
    )


async def open_queue(office: Office) -> None:
    if any("Selesai" in label for label in office.pic.labels()):
        await office.pic.press("Selesai")  # leave the queue shown before
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")


# -- a. accepting needs the worker's consent (PROGRAM_ACCEPT_WITHOUT_CONSENT=false) -------


async def test_an_enrollment_without_consent_waits_and_the_pic_reads_why(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll(consent=False)
    await open_queue(office)
    # Without WhatsApp the ASN got a Telegram link at the end of the enrollment.
    assert (
        "Belum bisa diterima. Persetujuan pekerja: menunggu jawaban pekerja "
        "(tautan Telegram dibuat tanggal 21 November 2026)."
    ) in office.pic.text
    assert not any("Terima" in label for label in office.pic.labels())
    # Return and skip stay: the PIC is never stuck.
    assert any("Kembalikan" in label for label in office.pic.labels())
    assert any("Lewati" in label for label in office.pic.labels())
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC


async def test_a_whatsapp_request_shows_when_it_was_asked(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await office.enroll()  # the request goes out on WhatsApp; no answer yet
    await open_queue(office)
    assert (
        "Persetujuan pekerja: menunggu jawaban pekerja "
        "(diminta lewat WhatsApp tanggal 21 November 2026)"
    ) in office.pic.text
    assert not any("Terima" in label for label in office.pic.labels())

    # The worker answers YA: the PIC may accept, and sees how consent came.
    await whatsapp_worker(office).say("YA")
    await open_queue(office)
    assert "Persetujuan pekerja: disetujui lewat WhatsApp" in office.pic.text
    await office.pic.press("Terima")
    assert "Siti Aminah diterima" in office.pic.text


async def test_accepting_without_consent_is_refused_by_the_workbench_too(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Whatever the chat shows, the state change itself checks the consent (a stale
    screen, the CLI, a second process)."""
    office = await build_office(sessionmaker)
    await office.enroll(consent=False)
    (sponsorship,) = await office.sponsorships()
    opd_id = await office.opd_id()
    async with sessionmaker.kw["bind"].begin() as connection:
        with pytest.raises(ChangeProblem) as refused:
            await workbench.accept(
                connection,
                office.engine.notices,
                opd_id=opd_id,
                sponsorship_id=sponsorship.id,
                pic_id=1,
                now=office.clock(),
            )
    assert refused.value.reason == "no_consent"
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC
    assert await office.outbox("accepted") == []


async def test_the_setting_lets_the_pic_accept_without_consent(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker, config=engine_config(accept_without_consent=True))
    await office.enroll(consent=False)
    await open_queue(office)
    assert "Persetujuan pekerja: menunggu jawaban pekerja" in office.pic.text
    assert "Belum bisa diterima" not in office.pic.text
    await office.pic.press("Terima")
    assert "Siti Aminah diterima" in office.pic.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ACCEPTED
    assert sponsorship.worker_consent is WorkerConsent.PENDING


async def test_a_worker_answering_after_the_pic_accepted_hears_what_it_means(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(
        sessionmaker,
        worker_channel=Channel.WHATSAPP,
        config=engine_config(accept_without_consent=True),
    )
    await office.enroll()
    await open_queue(office)
    await office.pic.press("Terima")
    worker = whatsapp_worker(office)
    await worker.say("YA")
    assert "sudah diterima PIC instansi" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.GIVEN
    assert sponsorship.status is SponsorshipStatus.ACCEPTED


async def test_a_worker_refusing_after_the_pic_accepted_stops_the_enrollment(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(
        sessionmaker,
        worker_channel=Channel.WHATSAPP,
        config=engine_config(accept_without_consent=True),
    )
    await office.enroll()
    await open_queue(office)
    await office.pic.press("Terima")
    worker = whatsapp_worker(office)
    await worker.say("TIDAK")
    assert "pendaftaran Anda dihentikan, walaupun PIC sudah menerimanya" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ENDED
    assert sponsorship.end_reason == "worker_refused"
    (told,) = await office.outbox("consent_answered")
    assert "Siti Aminah menolak" in told.body


async def test_a_worker_answering_while_the_enrollment_is_returned_hears_it_is_corrected(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await office.enroll()
    await open_queue(office)
    await office.pic.press("Kembalikan")
    await office.pic.press("NIK")
    worker = whatsapp_worker(office)
    await worker.say("YA")
    assert "sedang diperbaiki oleh ASN sponsor" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.GIVEN
    assert sponsorship.status is SponsorshipStatus.RETURNED


# -- b. a Telegram link the ASN forwards ---------------------------------------------------

LINK = re.compile(r"https://t\.me/sertakan_bot\?start=(c_[A-Za-z0-9_-]+)")


async def office_with_bot_name(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(
        sessionmaker, config=engine_config(telegram_bot_username="sertakan_bot")
    )


def link_in(chat: Chat) -> str:
    """The /start payload of the consent link in the chat's last replies."""
    match = LINK.search(chat.text)
    assert match is not None, chat.text
    return match.group(1)


async def test_a_worker_without_whatsapp_consents_through_the_forwarded_telegram_link(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await office_with_bot_name(sessionmaker)
    await office.enroll(consent=False)
    assert "Teruskan tautan ini kepada Siti Aminah" in office.asn.text
    assert "berlaku sampai 5 Desember 2026" in office.asn.text  # 14 days
    payload = link_in(office.asn)
    # Only the token's hash is stored.
    async with office.sessionmaker() as session:
        (link,) = (await session.execute(select(ConsentLink))).scalars().all()
    assert link.token_hash == hashlib.sha256(payload[2:].encode()).digest()
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.PENDING
    assert sponsorship.consent_requested_via is ConsentMethod.TELEGRAM_LINK

    await open_queue(office)
    assert "tautan Telegram dibuat tanggal 21 November 2026" in office.pic.text

    worker = Chat(office.engine, office.clock, sender="7001")
    await worker.say(f"/start {payload}")
    assert "Halo Siti Aminah. Budi Santoso mendaftarkan Anda" in worker.text
    await worker.press("YA, saya setuju")
    assert "Persetujuan Anda sudah dicatat" in worker.text
    assert "lewat WhatsApp" not in worker.text

    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.GIVEN
    assert sponsorship.consent_method is ConsentMethod.TELEGRAM_LINK
    async with office.sessionmaker() as session:
        record = (
            await session.execute(
                select(ConsentRecord).where(ConsentRecord.subject == ConsentSubject.WORKER)
            )
        ).scalar_one()
        (link,) = (await session.execute(select(ConsentLink))).scalars().all()
    assert (record.granted, record.channel, record.method) == (
        True,
        Channel.TELEGRAM,
        ConsentMethod.TELEGRAM_LINK,
    )
    assert record.sponsorship_id == sponsorship.id
    assert link.used_at is not None
    (told,) = await office.outbox("consent_answered")
    assert told.recipient == "1001" and "Siti Aminah menyetujui" in told.body

    # The PIC sees how consent came and may accept.
    await open_queue(office)
    assert "Persetujuan pekerja: disetujui lewat tautan Telegram" in office.pic.text
    await office.pic.press("Terima")
    assert "Siti Aminah diterima" in office.pic.text

    # The link has done its work: opening it again records nothing new.
    await worker.say(f"/start {payload}")
    assert "sudah dijawab sebelumnya" in worker.text


async def test_a_refusal_through_the_link_ends_the_enrollment(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await office_with_bot_name(sessionmaker)
    await office.enroll(consent=False)
    worker = Chat(office.engine, office.clock, sender="7001")
    await worker.say(f"/start {link_in(office.asn)}")
    await worker.say("tidak")
    assert "Pendaftaran Anda dibatalkan" in worker.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ENDED
    assert sponsorship.worker_consent is WorkerConsent.REFUSED


async def test_a_link_that_expired_was_mistyped_or_is_the_asns_own_records_nothing(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await office_with_bot_name(sessionmaker)
    await office.enroll(consent=False)
    payload = link_in(office.asn)
    worker = Chat(office.engine, office.clock, sender="7001")

    await office.asn.say(f"/start {payload}")
    assert "Tautan ini untuk pekerja yang Anda daftarkan" in office.asn.text
    await worker.say(f"/start {payload[:-1]}")
    assert "Tautan persetujuan ini tidak dikenal" in worker.text
    office.clock.advance(timedelta(days=15))
    await worker.say(f"/start {payload}")
    assert "sudah kedaluwarsa" in worker.text
    assert any("Menu" in label or "Daftar" in label for label in worker.labels())
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.PENDING

    # The ASN makes a new link from "my workers"; it works.
    await office.asn.say("pekerja")
    await office.asn.press("Minta persetujuan Siti Aminah")
    fresh = link_in(office.asn)
    assert fresh != payload
    await worker.say(f"/start {fresh}")
    await worker.press("YA, saya setuju")
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.GIVEN


async def test_the_console_shows_the_link_as_the_start_command_to_type(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)  # no bot username known
    await office.enroll(consent=False)
    match = re.search(r"/start (c_[A-Za-z0-9_-]+)", office.asn.text)
    assert match is not None
    worker = Chat(office.engine, office.clock, sender="siti", channel=Channel.CONSOLE)
    await worker.say(f"/start {match.group(1)}")
    await worker.press("YA, saya setuju")
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.consent_method is ConsentMethod.TELEGRAM_LINK


# -- c. a printed form, signed, recorded by the PIC with its scan ----------------------------


def option(chat: Chat, label_part: str) -> str:
    """The id of the option containing `label_part` in any of the last replies."""
    (found,) = [o.id for r in chat.replies for o in r.options if label_part in o.label]
    return found


def pdf_text(content: bytes) -> str:
    """The text drawn in a PDF's (compressed) content streams: enough to read the form."""
    texts = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", content, re.DOTALL):
        try:
            texts.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            texts.append(stream.decode("latin-1"))
    # Literal strings escape their parentheses: \(NIP ...\).
    return "\n".join(texts).replace("\\(", "(").replace("\\)", ")")


async def test_the_asn_prints_a_consent_form_with_the_masked_nik(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll(consent=False)
    await office.asn.press_id(option(office.asn, "Formulir persetujuan"))
    assert "Cetak, minta Siti Aminah membaca" in office.asn.text
    (document,) = office.asn.documents
    (sponsorship,) = await office.sponsorships()
    assert document.file_name == f"persetujuan-{sponsorship.id}.pdf"
    assert document.mime_type == "application/pdf"
    assert document.content.startswith(b"%PDF")
    text = pdf_text(document.content)
    for expected in (
        "Siti Aminah",
        "3201********0001",
        "Budi Santoso (NIP 198503122010011002)",
        "Dinas Kesehatan",
        "Rp16.800 per bulan",
        f"Nomor pendaftaran SERTAKAN: {sponsorship.id}",
        "YA, saya setuju didaftarkan",
    ):
        assert expected in text, expected
    assert "3201014708900001" not in text
    # The way on: the link, my workers, the menu.
    assert any("Tautan persetujuan" in label for label in office.asn.labels())

    assert sponsorship.consent_requested_via is ConsentMethod.FORM
    await open_queue(office)
    assert "menunggu formulir bertanda tangan (formulir dicetak tanggal 21 November 2026)" in (
        office.pic.text
    )


async def test_the_pic_records_the_signed_form_with_its_scan_and_may_accept(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll(consent=False)
    await open_queue(office)
    await office.pic.press("Catat formulir bertanda tangan")
    assert "Kirim foto atau pindaian formulir persetujuan Siti Aminah" in office.pic.text
    await office.pic.say("sudah ditandatangani")
    assert "Yang dibutuhkan foto atau berkas formulir" in office.pic.text
    await office.pic.send_document("formulir-siti.pdf", b"%PDF-1.4 scan")
    assert "Formulir persetujuan Siti Aminah dicatat" in office.pic.text
    assert "Persetujuan pekerja: disetujui dengan formulir bertanda tangan" in office.pic.text
    # The scan shows with the enrollment (the PIC is on the platform that issued it).
    assert office.pic.question.attachment == FileRef(
        Channel.TELEGRAM, EventKind.DOCUMENT, "file-formulir-siti.pdf"
    )
    await office.pic.press("Terima")
    assert "Siti Aminah diterima" in office.pic.text

    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ACCEPTED
    assert sponsorship.consent_method is ConsentMethod.FORM
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
    assert record.method is ConsentMethod.FORM
    assert record.evidence_file_ref == "document:file-formulir-siti.pdf"
    assert record.granted is True
    assert (audit.actor_type, audit.details["method"]) == ("pic", "form")
    (told,) = await office.outbox("consent_answered")
    assert told.recipient == "1001" and "Siti Aminah menyetujui" in told.body


async def test_a_photo_of_the_form_is_kept_by_its_reference_and_back_leaves_it_waiting(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll(consent=False)
    await open_queue(office)
    await office.pic.press("Catat formulir bertanda tangan")
    await office.pic.press("Kembali ke pendaftaran")
    assert "Belum bisa diterima" in office.pic.text
    await office.pic.press("Catat formulir bertanda tangan")
    await office.pic._send(kind=EventKind.PHOTO, file_ref="AgACAgUAAxkBAAIB")
    assert "dicatat" in office.pic.text
    async with office.sessionmaker() as session:
        record = (
            await session.execute(
                select(ConsentRecord).where(ConsentRecord.subject == ConsentSubject.WORKER)
            )
        ).scalar_one()
    assert record.evidence_file_ref == "AgACAgUAAxkBAAIB"
