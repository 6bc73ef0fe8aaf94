"""Issue 12 item 10 through the real engine: paying is easy to find ("Bayar iuran" in the main
menu when there is something to pay, /bayar in help) and every place that asks for dues says
where BPJS dues are actually paid (info, /bayar, reminders), from the province's data file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.payment_channels import load_payment_channels
from sertakan_data import PAYMENT_CHANNELS, shipped
from tests.fakes.chat import WORKER_NIK, engine_config
from tests.fakes.workbench import Office, build_office, issue_cards

CHANNELS = load_payment_channels(shipped(PAYMENT_CHANNELS))


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker, config=engine_config(payment_channels=CHANNELS))


async def test_help_lists_bayar(office: Office) -> None:
    await office.asn.say("bantuan")
    assert "/bayar" in office.asn.text


async def test_pay_dues_joins_the_menu_once_there_is_something_to_pay(office: Office) -> None:
    await office.asn.say("menu")
    assert not any("Bayar iuran" in label for label in office.asn.labels())
    await office.enroll()  # waiting for the PIC: nothing to pay yet
    await office.asn.say("menu")
    assert not any("Bayar iuran" in label for label in office.asn.labels())
    await issue_cards(office, WORKER_NIK)
    await office.asn.say("menu")
    await office.asn.press("Bayar iuran")
    text = office.asn.text
    assert "Tempat membayar iuran BPJS Ketenagakerjaan" in text
    assert "• Kantor Pos: di loket" in text and "nomor KPJ" in text
    # ... and then the payment is recorded as before.
    assert "Bulan berikutnya yang harus dibayar: Desember 2026" in text


async def test_info_has_a_where_to_pay_page_from_the_data_file(office: Office) -> None:
    await office.asn.say("info")
    await office.asn.press("Tempat bayar iuran")
    assert "• Kantor cabang BPJS Ketenagakerjaan: di loket pelayanan" in office.asn.text
    await office.asn.say("/bahasa")
    await office.asn.press("English")
    await office.asn.say("info")
    await office.asn.press("Where to pay")
    assert "• BPJS Ketenagakerjaan branch office: at the service counter" in office.asn.text


async def test_without_a_file_the_text_says_to_ask_the_pic(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)  # no payment channels configured
    await office.asn.say("info")
    await office.asn.press("Tempat bayar iuran")
    assert "tanyakan tempat pembayaran lain di daerah Anda kepada PIC OPD" in office.asn.text


async def test_a_reminder_says_where_to_pay(office: Office) -> None:
    await office.enroll()
    await issue_cards(office, WORKER_NIK)
    # 10 December 2026, 08:00 in Jakarta: five days before the first due date.
    office.clock.now = datetime(2026, 12, 10, 1, 0, tzinfo=UTC)
    await office.plan_reminders()
    (reminder,) = [row for row in await office.outbox() if row.kind.startswith("reminder")]
    assert reminder.body.startswith("⏰ Pengingat: iuran BPJS Ketenagakerjaan Siti Aminah")
    assert "• Minimarket (Indomaret, Alfamart): di kasir" in reminder.body


def test_the_reminder_templates_point_to_bayar_outside_the_24_hour_window() -> None:
    """A WhatsApp reminder sent as its approved template cannot carry the province's list;
    it says to type BAYAR, which answers with it."""
    from bot.whatsapp.templates import load_templates
    from domain.vocabulary import Language
    from tests.fakes.graph_api import SHIPPED_TEMPLATES

    book = load_templates(SHIPPED_TEMPLATES)
    for kind in ("before5", "before1", "overdue", "escalation"):
        template = book.get(f"reminder_{kind}")
        assert template is not None
        assert "ketik BAYAR" in template.text_for(Language.INDONESIAN).body
        assert "type BAYAR" in template.text_for(Language.ENGLISH).body
