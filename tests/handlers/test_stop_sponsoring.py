"""Issue 12 item 11 through the real engine: the ASN stops sponsoring a worker (reason, the last
month covered after the paid months, confirmation); the PIC and the worker are told, reminders
stop, and the end is audited."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.whatsapp.templates import load_templates
from domain.vocabulary import Channel, Language, SponsorshipStatus
from storage.models import AuditLog, Outbox
from tests.fakes.chat import OTHER_NIK, WORKER_NIK, Chat
from tests.fakes.graph_api import SHIPPED_TEMPLATES
from tests.fakes.workbench import Office, activate, build_office

WORKER_WA_ID = "6281298765432"  # the phone the ASN types in `Chat.enroll_until_summary`


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)


async def confirm_payment(office: Office, months: int = 1) -> None:
    await office.record_payment(months)
    await office.pic.say("pic")
    await office.pic.press("Konfirmasi pembayaran")
    await office.pic.press("Konfirmasi")


async def audit_of(office: Office, action: str) -> list[AuditLog]:
    async with office.sessionmaker() as session:
        rows = await session.execute(select(AuditLog).where(AuditLog.action == action))
        return list(rows.scalars())


def reminders(rows: list[Outbox]) -> list[Outbox]:
    return [row for row in rows if row.kind.startswith("reminder")]


async def test_stopping_after_a_paid_month_tells_everyone_and_stops_the_reminders(
    office: Office,
) -> None:
    worker = Chat(
        office.engine, office.clock, WORKER_WA_ID, Channel.WHATSAPP, sender_phone="+" + WORKER_WA_ID
    )
    await office.enroll()
    await worker.say("ya")  # consented on WhatsApp
    from tests.fakes.workbench import issue_cards

    await issue_cards(office, WORKER_NIK)
    await confirm_payment(office)  # December 2026
    # 10 January 2027: the January reminder is planned.
    office.clock.now = datetime(2027, 1, 10, 1, 0, tzinfo=UTC)
    await office.plan_reminders()
    assert len(reminders(await office.outbox())) == 1

    await office.asn.say("/pekerja")
    await office.asn.press("Berhenti mensponsori")
    assert "Mengapa Anda berhenti mensponsori Siti Aminah?" in office.asn.text
    assert "Belum ada yang diubah" in office.asn.text
    await office.asn.press("Tidak lagi bekerja untuk saya")
    text = office.asn.text
    assert "Hentikan sponsor untuk Siti Aminah?" in text
    assert "Alasan: Tidak lagi bekerja untuk saya" in text
    assert "Bulan terakhir yang disponsori: Desember 2026 (sudah dibayar)" in text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ACTIVE  # nothing before the confirmation

    await office.asn.press("Ya, hentikan sponsor")
    assert "Sponsor untuk Siti Aminah dihentikan" in office.asn.text
    assert "PIC OPD Anda sudah diberi tahu" in office.asn.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ENDED
    assert sponsorship.ended_month == date(2026, 12, 1)
    assert reminders(await office.outbox()) == []  # the unsent January reminder went

    to_pic, to_worker = await office.outbox("sponsorship_ended")
    assert to_pic.recipient == "2001" and to_pic.template == "sponsorship_ended_pic"
    assert "Budi Santoso berhenti mensponsori Siti Aminah (KPJ 90000000000)" in to_pic.body
    assert "Bulan terakhir yang disponsori: Desember 2026" in to_pic.body
    assert (to_worker.channel, to_worker.recipient) == (Channel.WHATSAPP, WORKER_WA_ID)
    template = load_templates(SHIPPED_TEMPLATES).get(to_worker.template)
    assert template is not None
    [body] = template.components(to_worker.params, Language.INDONESIAN)
    assert [p["text"] for p in body["parameters"]] == [
        "Siti Aminah",
        "Budi Santoso",
        "Desember 2026",
    ]
    (entry,) = await audit_of(office, "sponsorship.end")
    assert entry.actor_type == "asn" and entry.record_id == str(sponsorship.id)
    assert entry.details["reason_code"] == "no_longer_works"
    assert entry.details["ended_month"] == "2026-12-01"

    # Reminders stop: the next days plan nothing for it, and nothing is left to pay.
    office.clock.now = datetime(2027, 1, 14, 1, 0, tzinfo=UTC)
    await office.plan_reminders()
    assert reminders(await office.outbox()) == []
    await office.asn.say("/pekerja")
    assert "Sponsor dihentikan; iuran disponsori sampai Desember 2026" in office.asn.text
    assert not any("Berhenti" in label or "bayar" in label for label in office.asn.labels())
    await office.asn.say("menu")
    assert not any("Bayar iuran" in label for label in office.asn.labels())


async def test_before_the_card_a_typed_reason_and_changing_ones_mind(office: Office) -> None:
    await office.enroll()  # waiting for the PIC
    await office.asn.say("/berhenti")
    await office.asn.say("x")
    assert "Alasan harus 3–200 karakter" in office.asn.text
    await office.asn.say("Pekerja meninggal dunia")
    assert "Alasan: Pekerja meninggal dunia" in office.asn.text
    assert "Kartu BPJS belum terbit" in office.asn.text
    await office.asn.press("Tidak, tetap sponsori")
    assert "Tidak ada yang diubah" in office.asn.text
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC
    assert await office.outbox("sponsorship_ended") == []

    await office.asn.say("berhenti")
    await office.asn.say("Pekerja meninggal dunia")
    await office.asn.press("Ya, hentikan sponsor")
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ENDED and sponsorship.ended_month is None
    (to_pic, _to_worker) = await office.outbox("sponsorship_ended")
    assert "Alasan: Pekerja meninggal dunia" in to_pic.body
    assert "belum ada bulan yang dibayar" in to_pic.body
    # The PIC's queue no longer holds it.
    await office.pic.say("pic")
    assert "Menunggu diperiksa: 0" in office.pic.text


async def test_with_two_workers_the_asn_chooses_which(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    await office.asn.say("/berhenti")
    assert "Berhenti mensponsori siapa?" in office.asn.text
    await office.asn.press("Joko Susilo")
    await office.asn.press("Saya tidak sanggup membayar")
    assert "Belum ada iuran yang dibayar" in office.asn.text
    await office.asn.press("Ya, hentikan sponsor")
    siti, joko = await office.sponsorships()
    assert (siti.status, joko.status) == (SponsorshipStatus.ACTIVE, SponsorshipStatus.ENDED)
    # Without WhatsApp only the PIC is told.
    (to_pic,) = await office.outbox("sponsorship_ended")
    assert "Joko Susilo" in to_pic.body and "Saya tidak sanggup membayar" in to_pic.body


async def test_with_nothing_paid_paying_first_is_offered_before_the_stop_not_after(
    office: Office,
) -> None:
    """Walked from outside: the done message advised paying "before stopping" after the stop."""
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    await office.asn.say("/berhenti")
    await office.asn.press("Tidak lagi bekerja untuk saya")
    confirm = office.asn.text
    assert "tidak ada bulan yang disponsori" in confirm
    assert "bayar dan catat lewat /bayar sebelum berhenti" in confirm
    await office.asn.press("Ya, hentikan sponsor")
    done = office.asn.text
    assert "Sponsor untuk Siti Aminah dihentikan" in done
    assert "tidak ada bulan yang disponsori" in done
    assert "sebelum berhenti" not in done


async def test_a_payment_draft_of_a_stopped_worker_is_dropped_with_the_reason(
    office: Office,
) -> None:
    """Walked from outside: resuming it offered "1 bulan per pekerja, total Rp0" forever."""
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    await office.asn.say("/bayar")
    await office.asn.say("batal")  # the payment is kept as a draft
    await office.asn.say("/berhenti")
    await office.asn.press("Tidak lagi bekerja untuk saya")
    await office.asn.press("Ya, hentikan sponsor")
    await office.asn.say("menu")
    await office.asn.press("Lanjutkan pencatatan pembayaran")
    assert "Belum ada pekerja aktif yang iurannya Anda bayar sendiri" in office.asn.text
    assert not any("Rp0" in label for label in office.asn.labels())
    assert "➕ Daftarkan pekerja" in office.asn.labels()
    assert not any("Lanjutkan" in label for label in office.asn.labels())
