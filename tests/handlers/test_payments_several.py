"""PRODUCT 4.4 for several workers at once: one choice, one receipt, one payment row per
sponsorship; each worker's problem named and fixed without losing the rest; a month
recorded meanwhile sends the ASN back to the choice instead of ending the flow."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import PaymentPlan, PaymentStatus
from handlers.types import EventKind
from storage import audit, payments
from storage.models import ChannelAccount, Payment, Sponsorship
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.workbench import Office, activate, build_office

THIRD_NIK = "3201011505850002"  # man born 15 May 1985
DEC, JAN = date(2026, 12, 1), date(2027, 1, 1)


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    return office


async def all_payments(office: Office) -> list[Payment]:
    async with office.sessionmaker() as session:
        return list((await session.execute(select(Payment).order_by(Payment.id))).scalars())


async def record_elsewhere(office: Office, sponsorship_id: int, first: date, months: int) -> int:
    """The ASN's payment recorded by another process (another device) meanwhile."""
    async with office.sessionmaker.kw["bind"].begin() as connection:
        account = (
            await connection.execute(
                select(ChannelAccount.id).where(ChannelAccount.external_id == "1001")
            )
        ).scalar_one()
        return await payments.record(
            connection,
            sponsorship_id=sponsorship_id,
            first_month=first,
            months=months,
            amount=16_800 * months,
            receipt_file_ref=None,
            account_id=account,
            now=office.clock(),
        )


async def confirm_elsewhere(office: Office, sponsorship_id: int, first: date, months: int) -> None:
    """Months already paid and confirmed (as after the PIC's confirmation)."""
    payment_id = await record_elsewhere(office, sponsorship_id, first, months)
    async with office.sessionmaker.kw["bind"].begin() as connection:
        await connection.execute(
            update(Payment).where(Payment.id == payment_id).values(status=PaymentStatus.CONFIRMED)
        )


async def test_two_workers_paid_in_one_go_with_one_receipt(office: Office) -> None:
    # 10 December 2026: each worker has a reminder of December waiting in the outbox.
    office.clock.now = datetime(2026, 12, 10, 1, 0, tzinfo=UTC)
    await office.plan_reminders()
    assert len([r for r in await office.outbox() if r.kind.startswith("reminder")]) == 2
    asn = office.asn
    await asn.say("bayar")
    assert "1. Siti Aminah – KPJ" in asn.text and "2. Joko Susilo – KPJ" in asn.text
    await asn.press("Semua pekerja (2)")
    assert "Siti Aminah: dibayar sampai belum ada, bulan berikutnya Desember 2026" in asn.text
    assert "Berapa bulan untuk setiap pekerja" in asn.text
    await asn.press("3 bulan per pekerja")
    assert "Total iuran untuk 2 pekerja Rp100.800" in asn.text
    await asn.say("50400")  # one worker's share, not the total
    assert "Rp50.400 tidak sesuai tarif" in asn.text and "iurannya Rp100.800" in asn.text
    await asn.say("Rp 100.800")
    assert "bukti pembayaran" in asn.text
    await asn._send(kind=EventKind.PHOTO, file_ref="AgACAgUAAxkBAAIC")
    assert "• Siti Aminah: Desember 2026–Februari 2027 (3 bulan), Rp50.400" in asn.text
    assert "• Joko Susilo: Desember 2026–Februari 2027 (3 bulan), Rp50.400" in asn.text
    assert "Total: Rp100.800" in asn.text and "Bukti bayar: ada" in asn.text
    await asn.press("Catat pembayaran")
    assert "Pembayaran untuk 2 pekerja tercatat dan menunggu konfirmasi PIC" in asn.text

    siti, joko = await office.sponsorships()
    rows = await all_payments(office)
    assert [(p.sponsorship_id, p.first_month, p.months, p.amount) for p in rows] == [
        (siti.id, DEC, 3, 50_400),
        (joko.id, DEC, 3, 50_400),
    ]
    assert {p.receipt_file_ref for p in rows} == {"AgACAgUAAxkBAAIC"}
    assert {p.status for p in rows} == {PaymentStatus.RECORDED}
    async with office.sessionmaker.kw["bind"].connect() as connection:
        entries = await audit.recent(connection)
    recorded = sorted(int(e.record_id or 0) for e in entries if e.action == "payment.record")
    assert recorded == [p.id for p in rows]
    # Both workers' December reminders went with the payment.
    assert [r for r in await office.outbox() if r.kind.startswith("reminder")] == []

    pic = office.pic
    await pic.say("pic")
    await pic.press("Konfirmasi pembayaran (2)")
    assert "Siti Aminah" in pic.text and "ada (satu bukti untuk 2 pekerja)" in pic.text
    await pic.press("Konfirmasi")
    assert "Joko Susilo" in pic.text and "ada (satu bukti untuk 2 pekerja)" in pic.text
    await pic.press("Konfirmasi")
    assert len(await office.outbox("payment_confirmed")) == 2


async def test_several_workers_typed_by_number_or_name(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await activate(
        office,
        (WORKER_NIK, "Siti Aminah"),
        (OTHER_NIK, "Joko Susilo"),
        (THIRD_NIK, "Rahmat Hidayat"),
    )
    asn = office.asn
    await asn.say("bayar")
    await asn.say("1 7")
    assert "“7” tidak ada di daftar" in asn.text
    assert "Pembayaran untuk pekerja yang mana?" in asn.question.text
    await asn.say("Siti, Budi")
    assert "“Budi” tidak ada di daftar" in asn.text
    await asn.say("1 3")
    assert "Siti Aminah: dibayar sampai" in asn.text
    assert "Rahmat Hidayat: dibayar sampai" in asn.text and "Joko" not in asn.text
    await asn.say("kembali")
    await asn.say("siti dan joko")
    assert "Siti Aminah: dibayar sampai" in asn.text and "Joko Susilo: dibayar" in asn.text
    assert "Rahmat" not in asn.text
    await asn.say("1")  # a typed count is months, as for one worker
    assert "Total iuran untuk 2 pekerja Rp33.600" in asn.text
    await asn.press("sesuai tarif")
    await asn.press("Lewati")
    await asn.press("Catat pembayaran")
    siti, joko, _ = await office.sponsorships()
    assert [(p.sponsorship_id, p.months) for p in await all_payments(office)] == [
        (siti.id, 1),
        (joko.id, 1),
    ]
    assert {p.receipt_file_ref for p in await all_payments(office)} == {None}


async def test_one_worker_too_far_ahead_is_named_and_left_out_or_the_months_changed(
    office: Office,
) -> None:
    siti, joko = await office.sponsorships()
    await confirm_elsewhere(office, joko.id, DEC, 10)  # Joko is paid until September 2027
    asn = office.asn
    await asn.say("bayar")
    await asn.press("Semua pekerja")
    assert "Joko Susilo: dibayar sampai September 2027, bulan berikutnya Oktober 2027" in asn.text
    # Only counts that fit both are offered; a typed count is checked per worker.
    assert [label.split(",")[0] for label in asn.labels()] == ["1 bulan per pekerja"]
    await asn.say("3")
    assert "Pembayaran ini belum bisa dicatat" in asn.text
    assert "⚠️ Joko Susilo: Pembayaran di muka paling jauh 12 bulan" in asn.text
    assert "Siti Aminah:" not in asn.text
    await asn.press("Ubah jumlah bulan")
    assert "Berapa bulan untuk setiap pekerja" in asn.text
    await asn.say("3")
    await asn.press("Lanjut tanpa Joko Susilo")
    # Siti alone, with the three months chosen before.
    assert "Iuran untuk bulan-bulan ini Rp50.400" in asn.text
    await asn.press("sesuai tarif")
    await asn.press("Lewati")
    assert "Pekerja: Siti Aminah" in asn.text and "(3 bulan)" in asn.text
    await asn.press("Catat pembayaran")
    waiting = [p for p in await all_payments(office) if p.status is PaymentStatus.RECORDED]
    assert [(p.sponsorship_id, p.first_month, p.months) for p in waiting] == [(siti.id, DEC, 3)]


async def test_each_worker_pays_from_after_the_months_waiting_for_the_pic(
    office: Office,
) -> None:
    siti, joko = await office.sponsorships()
    await record_elsewhere(office, joko.id, DEC, 1)
    asn = office.asn
    await asn.say("bayar")
    await asn.press("Semua pekerja")
    # Joko's December waits for the PIC: his part starts in January.
    assert "Siti Aminah: dibayar sampai belum ada, bulan berikutnya Desember 2026" in asn.text
    assert "Joko Susilo: dibayar sampai belum ada, bulan berikutnya Januari 2027" in asn.text
    await asn.press("1 bulan per pekerja")
    assert "Total iuran untuk 2 pekerja Rp33.600" in asn.text
    await asn.press("sesuai tarif")
    await asn.press("Lewati")
    await asn.press("Catat pembayaran")
    recorded = [(p.sponsorship_id, p.first_month) for p in await all_payments(office)]
    assert recorded == [(joko.id, DEC), (siti.id, DEC), (joko.id, date(2027, 1, 1))]


async def test_different_plans_pay_each_plans_next_payment(office: Office) -> None:
    siti, joko = await office.sponsorships()
    async with office.sessionmaker.kw["bind"].begin() as connection:
        await connection.execute(
            update(Sponsorship).where(Sponsorship.id == joko.id).values(plan=PaymentPlan.QUARTERLY)
        )
    asn = office.asn
    await asn.say("bayar")
    await asn.press("Semua pekerja")
    # No month count suits a monthly and a quarterly worker: no question about it.
    assert "Total iuran untuk 2 pekerja Rp67.200" in asn.text
    await asn.press("sesuai tarif")
    await asn.press("Lewati")
    assert "• Siti Aminah: Desember 2026 (1 bulan), Rp16.800" in asn.text
    assert "• Joko Susilo: Desember 2026–Februari 2027 (3 bulan), Rp50.400" in asn.text
    assert "sesuai cara bayarnya sendiri" in asn.text
    assert not any("Ubah jumlah bulan" in label for label in asn.labels())
    await asn.press("Catat pembayaran")
    assert [(p.sponsorship_id, p.months) for p in await all_payments(office)] == [
        (siti.id, 1),
        (joko.id, 3),
    ]


async def test_a_month_recorded_meanwhile_goes_back_to_the_choice_keeping_the_rest(
    office: Office,
) -> None:
    siti, joko = await office.sponsorships()
    asn = office.asn
    await asn.say("bayar")
    await asn.press("Semua pekerja")
    await asn.press("1 bulan per pekerja")
    await asn.press("sesuai tarif")
    await asn.send_document("bukti.pdf", b"%PDF-1.4")
    assert "Total: Rp33.600" in asn.text
    other = await record_elsewhere(office, joko.id, DEC, 1)  # from the ASN's other phone
    await asn.press("Catat pembayaran")
    assert "Joko Susilo: Desember 2026 sudah tercatat" in asn.text
    assert "Menu utama" not in asn.text  # the flow goes on
    assert [p.id for p in await all_payments(office)] == [other]
    await asn.press("Lanjut tanpa Joko Susilo")
    await asn.press("sesuai tarif")
    # The receipt given before is kept: straight to the summary.
    assert "Pekerja: Siti Aminah" in asn.text and "Bukti bayar: ada" in asn.text
    await asn.press("Catat pembayaran")
    assert "Pembayaran tercatat dan menunggu konfirmasi PIC" in asn.text
    rows = await all_payments(office)
    assert [(p.sponsorship_id, p.receipt_file_ref) for p in rows] == [
        (joko.id, None),
        (siti.id, "document:file-bukti.pdf"),  # sent as a document
    ]


async def test_one_worker_month_recorded_meanwhile_does_not_end_the_flow(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Regression: "already recorded" at the last step ended the flow, losing the answers."""
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    (siti,) = await office.sponsorships()
    asn = office.asn
    await asn.say("bayar")
    await asn.press("1 bulan")
    await asn.press("sesuai tarif")
    await asn._send(kind=EventKind.PHOTO, file_ref="AgACAgUAAxkBAAID")
    await confirm_elsewhere(office, siti.id, DEC, 1)  # recorded and confirmed meanwhile
    await asn.press("Catat pembayaran")
    assert "⚠️ Siti Aminah: Desember 2026 sudah lunas" in asn.text
    assert "Menu utama" not in asn.text
    await asn.press("Ubah jumlah bulan")
    assert "Bulan berikutnya yang harus dibayar: Januari 2027" in asn.text
    await asn.press("1 bulan")
    await asn.press("sesuai tarif")
    assert "Januari 2027 (1 bulan)" in asn.text
    assert "Bukti bayar: ada" in asn.text
    await asn.press("Catat pembayaran")
    recorded = [p for p in await all_payments(office) if p.status is PaymentStatus.RECORDED]
    assert [(p.first_month, p.receipt_file_ref) for p in recorded] == [(JAN, "AgACAgUAAxkBAAID")]
