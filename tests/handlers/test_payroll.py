"""Issue 12 item 8 through the real engine: marking a payroll-deduction month paid shows who
and how much, asks to confirm, refuses when nobody is on payroll deduction, and can be undone
the same day (audited)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.tariff import FundingSource
from domain.vocabulary import PaymentPlan
from storage.models import AuditLog, Payment, Sponsorship
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.workbench import Office, activate, build_office


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    # 10 December 2026, 08:00 in Jakarta: December (the first covered month) is payable.
    office.clock.now = datetime(2026, 12, 10, 1, 0, tzinfo=UTC)
    return office


async def on_payroll(office: Office, *names: str) -> None:
    """Put these workers' sponsorships (all when none named) on payroll deduction."""
    from storage.models import Worker

    statement = update(Sponsorship).values(
        plan=PaymentPlan.PAYROLL_DEDUCTION, funding_source=FundingSource.PAYROLL_DEDUCTION
    )
    if names:
        statement = statement.where(
            Sponsorship.worker_id.in_(select(Worker.id).where(Worker.full_name.in_(names)))
        )
    async with office.sessionmaker.kw["bind"].begin() as connection:
        await connection.execute(statement)


async def payments(office: Office) -> list[Payment]:
    async with office.sessionmaker() as session:
        return list((await session.execute(select(Payment).order_by(Payment.id))).scalars())


async def audit_actions(office: Office) -> list[str]:
    async with office.sessionmaker() as session:
        rows = await session.execute(select(AuditLog.action).order_by(AuditLog.id))
        return [action for (action,) in rows if action.startswith("payment.payroll")]


async def test_nobody_on_payroll_deduction_is_refused_with_a_way_on(office: Office) -> None:
    await office.pic.say("pic")
    await office.pic.press("Potong gaji")
    assert "Belum ada peserta potong gaji di Dinas Kesehatan" in office.pic.text
    assert "Tidak ada yang bisa ditandai lunas" in office.pic.text
    assert any("menu PIC" in label for label in office.pic.labels())
    # Even a month's button pressed from an old message marks nobody.
    await office.pic.press_id("g:pic_payroll_ok:2026-12:0")
    assert "Belum ada peserta potong gaji" in office.pic.text
    assert await payments(office) == []
    assert await audit_actions(office) == []


async def test_the_month_shows_who_and_how_much_and_marks_only_on_confirmation(
    office: Office,
) -> None:
    await on_payroll(office)
    await office.pic.say("pic")
    await office.pic.press("Potong gaji")
    assert "Desember 2026: 2 dari 2 belum lunas" in " ".join(office.pic.labels())
    await office.pic.press("Desember 2026")
    text = office.pic.text
    assert "Tandai Desember 2026 lunas (potong gaji) untuk 2 peserta" in text
    assert "Rp16.800 per orang, total Rp33.600" in text
    assert "• Joko Susilo (sponsor: Budi Santoso)" in text
    assert "• Siti Aminah (sponsor: Budi Santoso)" in text
    assert await payments(office) == []  # nothing marked by looking

    await office.pic.press("Tandai 2 lunas")
    assert "Desember 2026 tercatat lunas untuk 2 peserta potong gaji (total Rp33.600)" in (
        office.pic.text
    )
    marked = await payments(office)
    assert [(p.first_month, p.amount, p.payroll) for p in marked] == [
        (date(2026, 12, 1), 16_800, True)
    ] * 2
    assert await audit_actions(office) == ["payment.payroll_month"]
    # Pressed again (a double tap): the list is all paid now, nothing is marked twice.
    await office.pic.press_id("g:pic_payroll_ok:2026-12:2")
    assert "Semua 2 peserta potong gaji sudah lunas untuk Desember 2026" in office.pic.text
    assert len(await payments(office)) == 2


async def test_a_list_that_changed_since_the_preview_is_shown_again_not_marked(
    office: Office,
) -> None:
    await on_payroll(office, "Siti Aminah")
    await office.pic.say("pic")
    await office.pic.press("Potong gaji")
    await office.pic.press("Desember 2026")
    assert "untuk 1 peserta" in office.pic.text
    await on_payroll(office, "Joko Susilo")  # the ASN changed plans meanwhile
    await office.pic.press("Tandai 1 lunas")
    assert "Daftarnya berubah" in office.pic.text
    assert "untuk 2 peserta" in office.pic.text
    assert await payments(office) == []
    await office.pic.press("Tandai 2 lunas")
    assert len(await payments(office)) == 2


async def test_a_mark_can_be_undone_the_same_day_only(office: Office) -> None:
    await on_payroll(office)
    await office.pic.say("pic")
    await office.pic.press("Potong gaji")
    await office.pic.press("Desember 2026")
    await office.pic.press("Tandai 2 lunas")
    await office.pic.press("Batalkan tanda lunas Desember 2026")
    assert "dibatalkan untuk 2 peserta" in office.pic.text
    assert "kembali belum lunas" in office.pic.text
    assert await payments(office) == []
    assert await audit_actions(office) == ["payment.payroll_month", "payment.payroll_month_undo"]
    await office.asn.say("/pekerja")
    assert "Dibayar sampai: belum ada pembayaran" in office.asn.text

    # Marked again, then the next day: no undo offered, and an old undo button changes nothing.
    await office.pic.press("Pilih bulan potong gaji")
    await office.pic.press("Desember 2026")
    await office.pic.press("Tandai 2 lunas")
    office.clock.now += timedelta(days=1)
    await office.pic.say("pic")
    await office.pic.press("Potong gaji")
    assert not any("Batalkan" in label for label in office.pic.labels())
    await office.pic.press_id("g:pic_payroll_undo:2026-12")
    assert "Tidak ada tanda lunas Desember 2026 dari hari ini" in office.pic.text
    assert len(await payments(office)) == 2
