"""PRODUCT 4.4 through the real engine: the ASN records a payment, the PIC confirms or rejects."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel, PaymentStatus
from handlers.flows.enrollment import PAYROLL_STATEMENT_VERSION
from handlers.types import EventKind, FileRef
from storage.models import Payment
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.workbench import Office, activate, build_office


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    return office


async def all_payments(office: Office) -> list[Payment]:
    async with office.sessionmaker() as session:
        return list((await session.execute(select(Payment).order_by(Payment.id))).scalars())


async def test_record_a_quarter_with_receipt_then_the_pic_confirms(office: Office) -> None:
    asn = office.asn
    await asn.say("/pekerja")
    assert "Dibayar sampai: belum ada pembayaran" in asn.text
    assert "15 Desember 2026, Rp16.800" in asn.text
    await asn.press("Catat pembayaran")
    assert "Bulan berikutnya yang harus dibayar: Desember 2026" in asn.text
    await asn.press("3 bulan")
    assert "Rp50.400" in asn.text
    await asn.say("Rp 50.000")
    assert "tidak sesuai tarif" in asn.text and "Rp50.400" in asn.text
    await asn.say("50.400")
    assert "bukti pembayaran" in asn.text
    await asn.say("sudah bayar kemarin")
    assert "harus berupa foto atau berkas" in asn.text
    await asn._send(kind=EventKind.PHOTO, file_ref="AgACAgUAAxkBAAIB")
    assert "Desember 2026–Februari 2027 (3 bulan)" in asn.text
    assert "Bukti bayar: ada" in asn.text
    await asn.press("Catat pembayaran")
    assert "menunggu konfirmasi PIC" in asn.text
    (payment,) = await all_payments(office)
    assert (payment.first_month, payment.months, payment.amount) == (date(2026, 12, 1), 3, 50_400)
    assert payment.status is PaymentStatus.RECORDED
    assert payment.receipt_file_ref == "AgACAgUAAxkBAAIB"
    # Not paid until the PIC confirms.
    await asn.say("/pekerja")
    assert "Dibayar sampai: belum ada pembayaran" in asn.text

    await office.pic.say("pic")
    await office.pic.press("Konfirmasi pembayaran (1)")
    assert "Siti Aminah" in office.pic.text and "Rp50.400" in office.pic.text
    await office.pic.press("Konfirmasi")
    assert "Pembayaran dikonfirmasi" in office.pic.text
    (notice,) = await office.outbox("payment_confirmed")
    assert notice.recipient == "1001" and "Desember 2026–Februari 2027" in notice.body
    await asn.say("/pekerja")
    assert "Dibayar sampai: Februari 2027" in asn.text
    assert "15 Maret 2027" in asn.text


async def test_rejected_payment_tells_the_asn_why(office: Office) -> None:
    await office.record_payment()  # December 2026, waiting for the PIC
    # The next payment starts after the month waiting for the PIC (the reminders
    # ask for it already); paid-until counts confirmed months only.
    await office.asn.say("bayar")
    assert "Dibayar sampai: belum ada" in office.asn.text
    assert "Januari 2027" in office.asn.text and "Desember 2026" not in office.asn.text
    await office.asn.say("batal")
    await office.pic.say("pic")
    await office.pic.press("Konfirmasi pembayaran")
    await office.pic.press("Tolak")
    await office.pic.say("Transfer belum masuk rekening BPJS")
    (payment,) = await all_payments(office)
    assert payment.status is PaymentStatus.REJECTED
    (notice,) = await office.outbox("payment_rejected")
    assert "Transfer belum masuk rekening BPJS" in notice.body
    # Rejected: December is the month to pay again.
    await office.asn.say("bayar")
    await office.asn.press("Mulai dari awal")  # the cancelled payment was kept as a draft
    assert "Desember 2026" in office.asn.text


async def test_the_months_after_one_waiting_for_the_pic_can_be_paid(office: Office) -> None:
    await office.record_payment()  # December, waiting
    await office.record_payment()  # January, recorded behind it
    december, january = await all_payments(office)
    assert (december.first_month, january.first_month) == (date(2026, 12, 1), date(2027, 1, 1))
    assert {december.status, january.status} == {PaymentStatus.RECORDED}


async def test_nothing_to_pay_before_the_card_and_not_too_far_ahead(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll(nik=OTHER_NIK, name="Joko Susilo")  # waiting for the PIC
    await office.asn.say("bayar")
    assert "Iuran dimulai setelah kartu BPJS terbit" in office.asn.text
    await office.asn.say("/pekerja")
    assert "Iuran pertama: 15 Desember 2026, Rp16.800" in office.asn.text


async def test_typed_months_beyond_the_prepayment_limit(office: Office) -> None:
    await office.asn.say("bayar")
    await office.asn.say("20")
    assert "paling jauh 12 bulan" in office.asn.text
    assert await all_payments(office) == []


async def test_plan_change_waits_for_the_end_of_a_prepaid_quarter(office: Office) -> None:
    from storage.models import Sponsorship

    await office.record_payment(3)
    await office.pic.say("pic")
    await office.pic.press("Konfirmasi pembayaran")
    await office.pic.press("Konfirmasi")
    await office.asn.say("/pekerja")
    await office.asn.press("Ubah cara bayar")
    await office.asn.press("tiga bulanan")
    assert "sudah dibayar sampai Februari 2027" in office.asn.text
    assert "mulai Maret 2027" in office.asn.text
    await office.asn.press("Ubah cara bayar")
    assert "tiga bulanan mulai Maret 2027" in office.asn.text
    async with office.sessionmaker() as session:
        row = (await session.execute(select(Sponsorship))).scalar_one()
    assert row.next_plan is not None and row.next_plan.value == "quarterly"
    assert row.next_plan_from == date(2027, 3, 1)
    await office.asn.say("/pekerja")
    assert "15 Maret 2027, Rp50.400" in office.asn.text
    # Regression: "my workers" showed the old plan after the change applied.
    assert "Cara bayar: tiga bulanan, mulai Maret 2027" in office.asn.text


async def test_a_recorded_payment_cancels_the_unsent_reminder_of_its_month(office: Office) -> None:
    from datetime import UTC, datetime

    # 10 December 2026, 08:00 in Jakarta: five days before the first due date.
    office.clock.now = datetime(2026, 12, 10, 1, 0, tzinfo=UTC)
    await office.plan_reminders()
    reminders = [row for row in await office.outbox() if row.kind.startswith("reminder")]
    assert len(reminders) == 1 and "Desember 2026" in reminders[0].body
    await office.record_payment()
    assert [row for row in await office.outbox() if row.kind.startswith("reminder")] == []


async def test_no_payment_for_a_lapsed_sponsorship(office: Office) -> None:
    from sqlalchemy import update

    from domain.vocabulary import SponsorshipStatus
    from storage.models import Sponsorship

    async with office.sessionmaker.kw["bind"].begin() as connection:
        await connection.execute(update(Sponsorship).values(status=SponsorshipStatus.LAPSED))
    await office.asn.say("bayar")
    assert "sudah nonaktif karena tunggakan 3 bulan" in office.asn.text
    assert "daftarkan ulang melalui PIC" in office.asn.text
    assert await all_payments(office) == []


async def test_marking_a_payroll_month_paid_cancels_the_pics_unsent_reminder(
    office: Office,
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from domain.tariff import FundingSource
    from domain.vocabulary import PaymentPlan
    from storage.models import Sponsorship

    async with office.sessionmaker.kw["bind"].begin() as connection:
        await connection.execute(
            update(Sponsorship).values(
                plan=PaymentPlan.PAYROLL_DEDUCTION, funding_source=FundingSource.PAYROLL_DEDUCTION
            )
        )
    office.clock.now = datetime(2026, 12, 10, 1, 0, tzinfo=UTC)
    await office.plan_reminders()
    (line,) = [row for row in await office.outbox() if row.kind.startswith("reminder")]
    assert line.recipient == "2001"  # the PIC, not the ASN
    await office.pic.say("pic")
    await office.pic.press("Potong gaji")
    await office.pic.press("Desember 2026")
    await office.pic.press("Tandai 1 lunas")
    assert "Desember 2026 tercatat lunas untuk 1 peserta" in office.pic.text
    assert [row for row in await office.outbox() if row.kind.startswith("reminder")] == []
    (payment,) = await all_payments(office)
    assert payment.status is PaymentStatus.CONFIRMED and payment.payroll


async def test_plan_change_to_payroll_records_the_statement_of_willingness(
    office: Office,
) -> None:
    from domain.vocabulary import ConsentPurpose
    from storage.models import ConsentRecord, Sponsorship

    await office.asn.say("/pekerja")
    await office.asn.press("Ubah cara bayar")
    await office.asn.press("potong gaji")
    assert "Rp16.800" in office.asn.text  # the monthly deduction the statement names
    await office.asn.press("Pilih cara bayar lain")
    assert "Ganti menjadi" in office.asn.text
    await office.asn.press("potong gaji")
    await office.asn.press("Saya bersedia")
    assert "mulai Desember 2026" in office.asn.text
    await office.asn.press("Ubah cara bayar")
    async with office.sessionmaker() as session:
        row = (await session.execute(select(Sponsorship))).scalar_one()
        consents = (
            (
                await session.execute(
                    select(ConsentRecord).where(
                        ConsentRecord.purpose == ConsentPurpose.PAYROLL_DEDUCTION
                    )
                )
            )
            .scalars()
            .all()
        )
    assert row.next_plan is not None and row.next_plan.value == "payroll_deduction"
    assert row.next_plan_from == date(2026, 12, 1)
    assert [c.sponsorship_id for c in consents] == [row.id]
    # The statement is recorded with its text version, time and channel.
    (consent,) = consents
    assert consent.granted and consent.text_version == PAYROLL_STATEMENT_VERSION
    assert consent.channel is Channel.TELEGRAM
    assert consent.recorded_at == office.clock()


async def test_a_lapsed_worker_is_protected_again_only_by_a_new_enrollment(
    office: Office,
) -> None:
    from sqlalchemy import update

    from domain.vocabulary import SponsorshipStatus
    from storage.models import Sponsorship

    async with office.sessionmaker.kw["bind"].begin() as connection:
        await connection.execute(update(Sponsorship).values(status=SponsorshipStatus.LAPSED))
    await office.asn.say("bayar")
    assert "daftarkan ulang melalui PIC" in office.asn.text
    # The same NIK can be enrolled again; it waits for the PIC like any enrollment.
    await office.enroll(nik=WORKER_NIK, name="Siti Aminah")
    lapsed, again = await office.sponsorships()
    assert lapsed.status is SponsorshipStatus.LAPSED
    assert again.status is SponsorshipStatus.WAITING_FOR_PIC
    assert again.worker_id == lapsed.worker_id and again.id != lapsed.id
    await office.asn.say("bayar")
    # Regression: this said "re-enroll through the PIC" although that was done.
    assert "daftarkan ulang melalui PIC" not in office.asn.text
    assert "Kepesertaan Siti Aminah sudah nonaktif" in office.asn.text
    assert "Pendaftaran barunya sudah masuk (menunggu pemeriksaan PIC)" in office.asn.text
    assert await all_payments(office) == []


async def test_after_a_change_to_payroll_the_pic_marks_the_month_not_the_asn(
    office: Office,
) -> None:
    """Regression: the change is stored as next_plan, and both the ASN's payment and the
    PIC's payroll month looked at the old plan only (the worker was never marked paid)."""
    from datetime import UTC, datetime

    await office.asn.say("/pekerja")
    await office.asn.press("Ubah cara bayar")
    await office.asn.press("potong gaji")
    await office.asn.press("Saya bersedia")
    await office.asn.press("Ubah cara bayar")
    assert "mulai Desember 2026" in office.asn.text
    await office.asn.say("/pekerja")
    assert not any("Catat pembayaran" in label for label in office.asn.labels())
    await office.asn.say("bayar")
    assert "potong gaji dicatat oleh PIC" in office.asn.text
    office.clock.now = datetime(2026, 12, 10, 1, 0, tzinfo=UTC)
    await office.pic.say("pic")
    await office.pic.press("Potong gaji")
    await office.pic.press("Desember 2026")
    await office.pic.press("Tandai 1 lunas")
    assert "Desember 2026 tercatat lunas untuk 1 peserta" in office.pic.text
    (payment,) = await all_payments(office)
    assert payment.status is PaymentStatus.CONFIRMED and payment.payroll
    assert payment.first_month == date(2026, 12, 1)
    await office.asn.say("/pekerja")
    assert "Dibayar sampai: Desember 2026" in office.asn.text
    assert "Cara bayar: potong gaji oleh bendahara, mulai Desember 2026" in office.asn.text


async def test_each_bad_payment_answer_is_named_and_asked_again_keeping_the_rest(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Too far ahead, a wrong amount, a sticker for a receipt: each gets its own message and
    the same question again; the worker and months chosen before are kept."""
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    asn = office.asn
    await asn.say("bayar")
    await asn.press("Joko Susilo")
    await asn.say("14")
    assert "paling jauh 12 bulan" in asn.text
    assert "Berapa bulan yang Anda bayar" in asn.question.text
    await asn.say("3")
    assert "Rp50.400" in asn.text
    await asn.say("16800")
    assert "Rp16.800 tidak sesuai tarif" in asn.text and "iurannya Rp50.400" in asn.text
    assert "Berapa yang Anda bayarkan" in asn.question.text
    await asn.press("sesuai tarif")
    await asn._send(kind=EventKind.UNSUPPORTED)  # a sticker or a voice note
    assert "harus berupa foto atau berkas" in asn.text
    assert "hanya bisa membaca teks" not in asn.text
    assert "bukti pembayaran" in asn.question.text
    await asn.send_document("bukti-transfer.pdf", b"%PDF-1.4")
    assert "Joko Susilo" in asn.text
    assert "Desember 2026–Februari 2027 (3 bulan)" in asn.text
    assert "Rp50.400" in asn.text and "Bukti bayar: ada" in asn.text
    await asn.press("Catat pembayaran")
    (payment,) = await all_payments(office)
    joko = (await office.sponsorships())[1]
    assert (payment.sponsorship_id, payment.months, payment.amount) == (joko.id, 3, 50_400)
    # A document is marked as such: the PIC is sent it again as a document.
    assert payment.receipt_file_ref == "document:file-bukti-transfer.pdf"
    await office.pic.say("pic")
    await office.pic.press("Konfirmasi pembayaran")
    assert office.pic.replies[-1].attachment == FileRef(
        Channel.TELEGRAM, EventKind.DOCUMENT, "file-bukti-transfer.pdf"
    )


async def test_a_change_to_payroll_counts_from_after_a_payment_waiting_for_the_pic(
    office: Office,
) -> None:
    """December recorded (waiting), then payroll chosen: it starts in January, after the
    month the ASN paid. When the PIC rejects December, the ASN pays December again but
    never January on: those months the treasurer pays."""
    await office.record_payment()  # December 2026, waiting for the PIC
    await office.asn.say("/pekerja")
    await office.asn.press("Ubah cara bayar")
    await office.asn.press("potong gaji")
    await office.asn.press("Saya bersedia")
    assert "mulai Januari 2027" in office.asn.text
    await office.asn.press("Ubah cara bayar")
    await office.pic.say("pic")
    await office.pic.press("Konfirmasi pembayaran")
    await office.pic.press("Tolak")
    await office.pic.say("Bukti transfer tidak terbaca")

    await office.asn.say("bayar")
    assert "Desember 2026" in office.asn.text
    # Only one month is offered: January on is deducted from salary.
    assert [label.split(":")[0] for label in office.asn.labels()] == ["1 bulan"]
    await office.asn.say("3")
    assert "Mulai Januari 2027 iurannya dipotong dari gaji" in office.asn.text
    assert "Berapa bulan yang Anda bayar" in office.asn.question.text
    await office.asn.say("1")
    await office.asn.press("sesuai tarif")
    await office.asn.press("Lewati")
    await office.asn.press("Catat pembayaran")
    rejected, again = await all_payments(office)
    assert rejected.status is PaymentStatus.REJECTED
    assert (again.status, again.first_month, again.months) == (
        PaymentStatus.RECORDED,
        date(2026, 12, 1),
        1,
    )


async def test_a_one_month_payment_names_its_month_once(office: Office) -> None:
    """Issue 12 item 15: the summary and the PIC's notice read "Desember 2026", not
    "Desember 2026 – Desember 2026"."""
    asn = office.asn
    await asn.say("bayar")
    assert "1 bulan: Desember 2026, Rp16.800" in asn.labels()
    await asn.press("1 bulan")
    await asn.press("sesuai tarif")
    await asn.press("Lewati")
    assert "Bulan: Desember 2026 (1 bulan)" in asn.text
    await asn.press("Catat pembayaran")
    await office.pic.say("pic")
    await office.pic.press("Konfirmasi pembayaran (1)")
    assert "Bulan: Desember 2026 (1 bulan)" in office.pic.text
    await office.pic.press("Konfirmasi")
    (notice,) = await office.outbox("payment_confirmed")
    assert "untuk Desember 2026 sudah dikonfirmasi" in notice.body
    assert notice.params["months"] == "Desember 2026"
