"""Promises kept (issue 12): the accept is told, and the card says when protection starts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.whatsapp.templates import load_templates
from domain.vocabulary import Channel, Language, SponsorshipStatus, WorkerConsent
from storage.models import Outbox
from tests.fakes.chat import WORKER_NIK, Chat, engine_config
from tests.fakes.graph_api import SHIPPED_TEMPLATES
from tests.fakes.workbench import Office, build_office, issue_cards

#: The worker's phone as the ASN types it below, and as WhatsApp sends it.
WORKER_PHONE = "081298765432"
WORKER_WA_ID = "6281298765432"


def worker_chat(office: Office) -> Chat:
    return Chat(
        office.engine,
        office.clock,
        sender=WORKER_WA_ID,
        channel=Channel.WHATSAPP,
        sender_phone="+" + WORKER_WA_ID,
    )


def outside_the_window(notice: Outbox) -> list[str]:
    """The body parameters the notice goes with as its approved template (no 24-hour window)."""
    template = load_templates(SHIPPED_TEMPLATES).get(notice.template)
    assert template is not None, notice.template
    [body] = template.components(notice.params, Language.INDONESIAN)
    return [parameter["text"] for parameter in body["parameters"]]


async def enroll(
    office: Office, *, first_month: str = "Desember 2026", phone: str | None = WORKER_PHONE
) -> None:
    """The ASN enrolls Siti Aminah, covered from `first_month`; `phone=None`: "no phone"."""
    asn = office.asn
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.press("Asisten rumah tangga")
    await asn.say("Siti Aminah")
    await asn.say(WORKER_NIK)
    await asn.press("Ya, benar")
    await asn.say("Bogor")
    if phone is None:
        await asn.press("Lewati")
    else:
        await asn.say(phone)
    await asn.say("Jl. Melati No. 5 RT 02/RW 01")
    await asn.say("Sukamaju")
    await asn.say("Ciawi")
    await asn.say("Kabupaten Bogor")
    await asn.press("Bulanan")
    await asn.press(first_month)
    await asn.press("Kirim ke PIC")
    assert "menunggu pemeriksaan PIC" in asn.text


async def accept(office: Office) -> str:
    """The PIC opens the queue and accepts the first enrollment; returns the button's id."""
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    (button,) = [o for o in office.pic.options if "Terima" in o.label]
    await office.pic.press_id(button.id)
    assert "Siti Aminah diterima" in office.pic.text
    return button.id


async def test_the_asn_is_told_once_when_the_pic_accepts(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await enroll(office)
    assert "Anda akan diberi tahu bila diterima" in office.asn.text
    assert await office.outbox("accepted") == []
    await office.worker_consents()

    button = await accept(office)
    (notice,) = await office.outbox("accepted")
    assert (notice.channel, notice.recipient) == (Channel.TELEGRAM, "1001")
    assert notice.dedupe_key == f"accepted:asn:{(await office.sponsorships())[0].id}"
    assert "Pendaftaran Siti Aminah (3201********0001) diterima oleh PIC Dinas Kesehatan" in (
        notice.body
    )
    assert notice.template == "enrollment_accepted"
    assert notice.params == {"name": "Siti Aminah", "opd": "Dinas Kesehatan"}
    assert outside_the_window(notice) == ["Siti Aminah", "Dinas Kesehatan"]

    # The platform delivers the press again, the PIC presses the old button again,
    # and the notice is planned a second time: still one notice.
    await office.pic.replay()
    await office.pic.press_id(button)
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ACCEPTED
    async with sessionmaker.kw["bind"].begin() as connection:
        await office.engine.notices.enrollment_accepted(
            connection, sponsorship.id, now=office.clock()
        )
    assert [n.id for n in await office.outbox("accepted")] == [notice.id]


async def test_a_worker_who_consented_on_whatsapp_is_told_too(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await enroll(office)
    (sponsorship,) = await office.sponsorships()
    await worker_chat(office).press_id(f"consent:yes:{sponsorship.id}")
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.worker_consent is WorkerConsent.GIVEN

    await accept(office)
    await office.pic.replay()
    to_asn, to_worker = await office.outbox("accepted")
    assert to_asn.recipient == "1001"
    assert (to_worker.channel, to_worker.recipient) == (Channel.WHATSAPP, WORKER_WA_ID)
    assert to_worker.dedupe_key == f"accepted:worker:{sponsorship.id}"
    assert to_worker.template == "enrollment_accepted_worker"
    assert to_worker.params == {
        "name": "Siti Aminah",
        "asn": "Budi Santoso",
        "opd": "Dinas Kesehatan",
    }
    assert "Halo Siti Aminah, pendaftaran BPJS Ketenagakerjaan Anda oleh Budi Santoso" in (
        to_worker.body
    )
    assert "diterima PIC Dinas Kesehatan" in to_worker.body
    assert "3201" not in to_worker.body  # the worker's notice quotes no NIK
    assert outside_the_window(to_worker) == ["Siti Aminah", "Budi Santoso", "Dinas Kesehatan"]


@pytest.mark.parametrize("case", ["consent not given", "no phone", "no WhatsApp"])
async def test_a_worker_who_did_not_consent_or_cannot_be_reached_is_not_told(
    sessionmaker: async_sessionmaker[AsyncSession], case: str
) -> None:
    channel = None if case == "no WhatsApp" else Channel.WHATSAPP
    # Accepting without the worker's consent needs PROGRAM_ACCEPT_WITHOUT_CONSENT.
    config = engine_config(accept_without_consent=True) if case == "consent not given" else None
    office = await build_office(sessionmaker, worker_channel=channel, config=config)
    await enroll(office, phone=None if case == "no phone" else WORKER_PHONE)
    (sponsorship,) = await office.sponsorships()
    # Asked on WhatsApp, or (no phone, no WhatsApp) through the Telegram link the ASN got.
    assert sponsorship.worker_consent is WorkerConsent.PENDING
    if case != "consent not given":
        await office.worker_consents()  # another way than WhatsApp (a link, a form)

    await accept(office)
    (notice,) = await office.outbox("accepted")
    assert notice.recipient == "1001"


async def test_a_card_before_the_first_month_says_from_which_day_the_worker_is_protected(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await enroll(office, first_month="Januari 2027")  # on 21 November 2026
    office.clock.now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # 10:00 in Jakarta
    await issue_cards(office, WORKER_NIK)

    to_asn, to_worker = await office.outbox("card_ready")
    assert to_asn.recipient == "1001" and to_worker.recipient == WORKER_WA_ID
    assert "Nomor KPJ: 90000000000" in to_asn.body
    assert "Siti Aminah terlindungi JKK dan JKM mulai 1 Januari 2027" in to_asn.body
    assert "Anda terlindungi JKK dan JKM mulai 1 Januari 2027" in to_worker.body
    assert "kini" not in to_asn.body and "kini" not in to_worker.body


@pytest.mark.parametrize(
    "card_issued",
    [
        datetime(2026, 12, 10, 3, 0, tzinfo=UTC),  # well into the first month
        datetime(2026, 11, 30, 18, 0, tzinfo=UTC),  # 1 December 01:00 in Jakarta
    ],
)
async def test_a_card_within_the_first_month_says_the_worker_is_protected_now(
    sessionmaker: async_sessionmaker[AsyncSession], card_issued: datetime
) -> None:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await enroll(office, first_month="Desember 2026")
    office.clock.now = card_issued
    await issue_cards(office, WORKER_NIK)

    to_asn, to_worker = await office.outbox("card_ready")
    assert "Siti Aminah kini terlindungi JKK dan JKM selama iuran dibayar tepat waktu" in (
        to_asn.body
    )
    assert "Anda kini terlindungi JKK dan JKM" in to_worker.body
    assert "mulai" not in to_asn.body and "mulai" not in to_worker.body
