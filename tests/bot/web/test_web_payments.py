"""Payments to confirm on the web: the receipt streamed from its channel, confirm or
reject with a reason, the ASN told as in the chat (issue 13)."""

from __future__ import annotations

import dataclasses

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.web.app import ReceiptSource
from bot.web.receipts import ChannelReceipts
from bot.whatsapp.client import WhatsAppClient
from bot.whatsapp.receipts import WhatsAppReceipts
from domain.vocabulary import Channel, PaymentStatus
from handlers.types import EventKind
from storage.models import Payment
from tests.fakes.chat import WORKER_NIK, Chat
from tests.fakes.graph_api import FakeGraphServer
from tests.fakes.web import Browser, admin_link, pic_signs_in, web_server
from tests.fakes.workbench import Office, activate, build_office

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


class StoredReceipts(ReceiptSource):
    """The platform's files, as the Telegram adapter would fetch them."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def fetch(self, channel: str, file_ref: str) -> tuple[bytes, str] | None:
        self.asked.append((channel, file_ref))
        return (PNG, "image/png") if file_ref == "AgACAgUAAxkBAAIB" else None


async def _paid_with_receipt(office: Office, file_ref: str = "AgACAgUAAxkBAAIB") -> None:
    asn = office.asn
    await asn.say("bayar")
    await asn.press("1 bulan")
    await asn.press("sesuai tarif")
    await asn._send(kind=EventKind.PHOTO, file_ref=file_ref)
    await asn.press("Catat pembayaran")


async def _payments(office: Office) -> list[Payment]:
    async with office.sessionmaker() as session:
        return list((await session.execute(select(Payment).order_by(Payment.id))).scalars())


async def test_the_receipt_is_shown_and_the_pic_confirms(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    await _paid_with_receipt(office)
    (payment,) = await _payments(office)
    receipts = StoredReceipts()
    async with web_server(office, receipts) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        await browser.get("/web/payments")
        assert "Siti Aminah" in browser.last and "Rp16.800" in browser.last
        image = await client.get(f"/web/payments/{payment.id}/receipt")
        assert image.status == 200 and image.content_type == "image/png"
        assert await image.read() == PNG
        assert receipts.asked == [("telegram", "AgACAgUAAxkBAAIB")]
        assert (await browser.post(f"/web/payments/{payment.id}/confirm", {})).status == 200
        assert "dikonfirmasi" in browser.last
        again = await browser.post(f"/web/payments/{payment.id}/confirm", {})
        assert again.status == 200 and "sudah" in browser.last
    (payment,) = await _payments(office)
    assert payment.status is PaymentStatus.CONFIRMED
    (notice,) = await office.outbox("payment_confirmed")
    assert notice.recipient == "1001"


async def test_the_pic_rejects_with_their_own_reason(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    await office.record_payment()
    (payment,) = await _payments(office)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        form = {"reason": "other", "reason_text": "Transfer belum masuk rekening BPJS"}
        assert (await browser.post(f"/web/payments/{payment.id}/reject", form)).status == 200
        other = await pic_signs_in(office, office.other_pic, client)
        assert (await other.post(f"/web/payments/{payment.id}/confirm", {})).status == 404
    (payment,) = await _payments(office)
    assert payment.status is PaymentStatus.REJECTED
    (notice,) = await office.outbox("payment_rejected")
    assert "Transfer belum masuk rekening BPJS" in notice.body


async def _whatsapp_asn_office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    """The office, with its ASN writing on WhatsApp (the number vouched for by the channel)."""
    office = await build_office(sessionmaker)
    asn = Chat(office.engine, office.clock, "6281277770001", Channel.WHATSAPP, "+6281277770001")
    await asn.say("/start")
    await asn.press("Daftar sebagai ASN")
    await asn.press("Setuju")
    await asn.say("199001152023211005")
    await asn.say("Budi Santoso")
    await asn.say("kesehatan")
    await asn.press("Dinas Kesehatan")
    await asn.press("Konfirmasi")
    return dataclasses.replace(office, asn=asn)


async def test_a_whatsapp_receipt_is_fetched_from_the_graph_api_and_an_expired_one_is_said(
    sessionmaker: async_sessionmaker[AsyncSession],
    graph: FakeGraphServer,
    wa_client: WhatsAppClient,
) -> None:
    """The photo the ASN sent on WhatsApp is asked of the Graph API when the PIC opens it;
    once Meta no longer holds it the PIC reads why, and can still decide."""
    office = await _whatsapp_asn_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    media_id = graph.add_media(PNG, "image/png")
    await _paid_with_receipt(office, media_id)
    (payment,) = await _payments(office)
    assert payment.receipt_file_ref == media_id
    receipts = ChannelReceipts({"whatsapp": WhatsAppReceipts(wa_client)})
    async with web_server(office, receipts) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        await browser.get("/web/payments")
        assert f"/web/payments/{payment.id}/receipt" in browser.last
        image = await client.get(f"/web/payments/{payment.id}/receipt")
        assert image.status == 200 and image.content_type == "image/png"
        assert await image.read() == PNG
        assert image.headers["Cache-Control"] == "no-store"
        graph.expire_media(media_id)
        gone = await browser.get(f"/web/payments/{payment.id}/receipt")
        assert gone.status == 404 and "tidak ada lagi di kanalnya" in browser.last
        assert (await browser.post(f"/web/payments/{payment.id}/confirm", {})).status == 200
    (payment,) = await _payments(office)
    assert payment.status is PaymentStatus.CONFIRMED


async def test_an_administrator_reads_the_payments_but_cannot_decide_as_in_the_chat(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Confirming a payment is the PIC's in the chat (Guard.PIC; the row names the PIC who
    decided): an administrator sees the payment and why there is no button, and a POST
    changes nothing."""
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    await office.record_payment()
    (payment,) = await _payments(office)
    opd = str(await office.opd_id())
    async with web_server(office) as server, TestClient(server) as client:
        browser = Browser(client)
        await browser.sign_in(await admin_link(office))
        await browser.get("/web/payments", opd=opd)
        assert "Siti Aminah" in browser.last and 'id="pic-decides"' in browser.last
        assert "/confirm" not in browser.last
        confirm = await browser.post(f"/web/payments/{payment.id}/confirm", {"opd": opd})
        reject = await browser.post(
            f"/web/payments/{payment.id}/reject", {"opd": opd, "reason": "amount"}
        )
        assert confirm.status == reject.status == 403
    (payment,) = await _payments(office)
    assert payment.status is PaymentStatus.RECORDED
    assert await office.outbox("payment_confirmed") == []
    assert await office.outbox("payment_rejected") == []
