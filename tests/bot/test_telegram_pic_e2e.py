"""From enrollment to card over real HTTP: the fake Bot API, the Telegram adapter, the
engine, the database, the outbox and the dispatcher, as `sertakan run` wires them.

An ASN enrolls two workers, the PIC accepts them, exports the collective file
(sendDocument), confirms it went to BPJS, sends back the KPJ file (getFile and
download), applies it; the ASN then receives each card-ready notice exactly once,
although Telegram answers the first send with 429 and the dispatcher is stopped
after the first notice and replaced by a new one.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from bot.app import build_runtime, seed_opds_if_empty
from bot.settings import DispatcherSettings, Settings
from bot.telegram import TelegramSender
from domain.vocabulary import Channel, OutboxStatus, SponsorshipStatus
from scheduler.dispatcher import Dispatcher
from storage.audit import Actor
from storage.models import Opd, Outbox, Sponsorship
from storage.roles import appoint
from tests.bot.test_telegram_e2e import (
    make_settings,
    open_bot,
    polling,
    register,
)
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.clock import FrozenClock
from tests.fakes.telegram_api import FakeTelegramServer, ResentFile
from tests.fakes.telegram_user import TelegramUser

ASN_ID = 5001
PIC_ID = 6001
#: Telegram ids of the workers who open their consent links.
_worker_ids = itertools.count(7001)


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


async def settings_with_a_pic(
    tmp_path: Path,
    database_url: str,
    server: FakeTelegramServer,
    *,
    also: Callable[[AsyncConnection], Awaitable[object]] | None = None,
) -> Settings:
    """Settings on the fake Bot API with the OPD list loaded and PIC_ID appointed PIC of
    BKL-DINKES (and whatever `also` adds in the same transaction)."""
    settings = make_settings(tmp_path, database_url, server)
    runtime = await build_runtime(settings, clock=FrozenClock(), migrate=False)
    try:
        await seed_opds_if_empty(runtime)
        async with runtime.db.begin() as connection:
            opd_id = (
                await connection.execute(select(Opd.id).where(Opd.code == "BKL-DINKES"))
            ).scalar_one()
            await appoint(
                connection,
                opd_id=opd_id,
                channel=Channel.TELEGRAM,
                external_id=str(PIC_ID),
                phone_e164=None,
                actor=Actor.admin("test"),
                now=FrozenClock()(),
            )
            if also is not None:
                await also(connection)
    finally:
        await runtime.close()
    return settings


@pytest.fixture
async def settings(
    tmp_path: Path,
    database_url: str,
    server: FakeTelegramServer,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
) -> Settings:
    return await settings_with_a_pic(tmp_path, database_url, server)


async def enroll(asn: TelegramUser, nik: str, name: str) -> None:
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.press("Asisten rumah tangga")
    await asn.say(name)
    await asn.say(nik)
    await asn.press("Ya, benar")
    for answer in (
        "Bogor",
        "081298765432",
        "Jl. Melati No. 5",
        "Sukamaju",
        "Ciawi",
        "Kabupaten Bogor",
    ):
        await asn.say(answer)
    await asn.press("Bulanan")
    await asn.press("Desember 2026")
    assert name in asn.text
    await asn.press("Kirim ke PIC")
    assert "menunggu pemeriksaan PIC Dinas Kesehatan" in asn.text
    # No WhatsApp: the worker consents through the Telegram link the ASN forwards.
    link = re.search(r"(?:\?start=|/start )(c_[A-Za-z0-9_-]+)", asn.text)
    assert link is not None, asn.text
    worker = TelegramUser(asn.server, next(_worker_ids))
    await worker.say(f"/start {link.group(1)}")
    assert f"Halo {name}." in worker.text
    await worker.press("YA, saya setuju")
    assert "Persetujuan Anda sudah dicatat" in worker.text


async def press_on_document(server: FakeTelegramServer, user: TelegramUser, label: str) -> None:
    """Press a button carried by the latest document the bot sent this person."""
    document = [d for d in server.documents if d.chat_id == user.user_id][-1]
    buttons = [b for row in (document.reply_markup or {}).get("inline_keyboard", []) for b in row]
    (button,) = [b for b in buttons if label in b["text"]]
    await user.send(
        server.callback_update(user.user_id, button["callback_data"], document.message_id)
    )


async def activate(
    server: FakeTelegramServer, asn: TelegramUser, pic: TelegramUser, workers: dict[str, str]
) -> None:
    """Enroll `workers` (NIK: name), the PIC accepts and exports them, and applies KPJs
    12345678901, 12345678902, ... in that order."""
    for nik, name in workers.items():
        await enroll(asn, nik, name)
    await pic.say("pic")
    await pic.press("Periksa pendaftaran")
    for _ in workers:
        await pic.press("Terima")
    await pic.say("pic")
    await pic.press("Ekspor")
    await press_on_document(server, pic, "Sudah dikirim ke BPJS")
    rows = "".join(f"{nik},{12345678901 + i}\n" for i, nik in enumerate(workers))
    payload = server.add_file("BQACAgUAAxkBAAIKPJ", "kpj.csv", f"NIK,KPJ\n{rows}".encode())
    await pic.send(server.document_update(PIC_ID, payload))
    await pic.press("Terapkan")


def card_notices(server: FakeTelegramServer) -> list[str]:
    return [m.text for m in server.messages_to(ASN_ID) if "Nomor KPJ:" in m.text]


def accepted_notices(server: FakeTelegramServer) -> list[str]:
    return [m.text for m in server.messages_to(ASN_ID) if "diterima oleh PIC" in m.text]


async def wait_until_all_sent(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    while True:
        async with sessionmaker() as session:
            statuses = set((await session.execute(select(Outbox.status))).scalars().all())
        if statuses == {OutboxStatus.SENT}:
            return
        await asyncio.sleep(0.1)


async def test_from_enrollment_to_card_ready_exactly_once(
    settings: Settings,
    server: FakeTelegramServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock()  # Saturday 10:00 in Jakarta: outside quiet hours
    asn = TelegramUser(server, ASN_ID)
    pic = TelegramUser(server, PIC_ID)
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        # As `sertakan run` does without TELEGRAM_BOT_USERNAME: the links name the bot.
        bot.runtime.engine.use_telegram_username(await bot.channel.username())
        await register(asn)
        await enroll(asn, WORKER_NIK, "Siti Aminah")
        assert any("https://t.me/SertakanBot?start=c_" in m.text for m in asn.messages)
        await enroll(asn, OTHER_NIK, "Joko Susilo")

        await pic.say("pic")
        assert "Menunggu diperiksa: 2" in pic.text
        await pic.press("Periksa pendaftaran")
        await pic.press("Terima")
        await pic.press("Terima")
        assert "Tidak ada pendaftaran yang menunggu" in pic.text
        await pic.say("pic")
        await pic.press("Ekspor")
        (document,) = [d for d in server.documents if d.chat_id == PIC_ID]
        assert document.file_name == "BKL-DINKES-2026-001.xlsx"
        assert "2 pendaftaran" in (document.caption or "")
        sheet = load_workbook(io.BytesIO(document.content), read_only=True).worksheets[0]
        values = {str(v) for row in sheet.iter_rows(values_only=True) for v in row if v}
        assert {WORKER_NIK, OTHER_NIK} <= values
        await press_on_document(server, pic, "Sudah dikirim ke BPJS")
        assert "tercatat dikirim ke BPJS" in pic.text

        kpj_file = (
            b"No;NIK;Nomor KPJ\n1;3201014708900001;12345678901\n2;1771010101800003;12345678902\n"
        )
        payload = server.add_file("BQACAgUAAxkBAAIKPI", "kpj_dari_bpjs.csv", kpj_file)
        await pic.send(server.document_update(PIC_ID, payload))
        assert server.downloads() != []
        assert "Cocok, siap diterapkan: 2" in pic.text
        await pic.press("Terapkan 2 KPJ")
        assert "2 pendaftaran kini aktif" in pic.text
        assert card_notices(server) == []  # planned, not yet sent

        # The dispatcher as `sertakan run` builds it, against a Telegram that enforces
        # its flood control and answers the very first notice with 429.
        server.enforce_rates(per_second=30, chat_interval_s=1.0)
        server.fail_next("sendMessage", status=429, retry_after=1)
        dispatch = DispatcherSettings(tick_interval_s=0.1, idle_s=0.05)
        # Retries are due `retry_after` later by the clock: let it run from here on.
        started, frozen_at = time.monotonic(), clock()

        def running_clock() -> datetime:
            return frozen_at + timedelta(seconds=time.monotonic() - started)

        sender = TelegramSender(bot.channel.bot)
        first = Dispatcher(
            bot.runtime.db,
            {Channel.TELEGRAM: sender},
            running_clock,
            dispatch,
            ZoneInfo("Asia/Jakarta"),
        )
        stop_first = asyncio.Event()
        running = asyncio.create_task(first.run(stop_first))
        await server.wait_until(lambda: len(card_notices(server)) >= 1, timeout=15)
        stop_first.set()  # restarted mid-batch: the second notice is still waiting
        await asyncio.wait_for(running, 10)
        assert len(card_notices(server)) == 1  # one chat: one message per second
        second = Dispatcher(
            bot.runtime.db,
            {Channel.TELEGRAM: sender},
            running_clock,
            dispatch,
            ZoneInfo("Asia/Jakarta"),
        )
        stop_second = asyncio.Event()
        running = asyncio.create_task(second.run(stop_second))
        # Every planned notice (consent answers, accepts, cards) leaves, one a second to the
        # ASN's chat; the one answered 429 goes again after the others.
        await asyncio.wait_for(wait_until_all_sent(sessionmaker), 20)
        await asyncio.sleep(0.5)  # room for a duplicate to show up, were there one
        stop_second.set()
        await asyncio.wait_for(running, 10)

    notices = card_notices(server)
    assert len(notices) == 2
    assert sum("Siti Aminah" in n and "12345678901" in n for n in notices) == 1
    assert sum("Joko Susilo" in n and "12345678902" in n for n in notices) == 1
    # The card comes on 21 November, the first covered month is December.
    assert all("terlindungi JKK dan JKM mulai 1 Desember 2026" in n for n in notices)
    # Both accepts were told too, once each.
    accepted = accepted_notices(server)
    assert len(accepted) == 2
    assert sum("Siti Aminah" in n for n in accepted) == sum("Joko Susilo" in n for n in accepted)
    assert server.too_many_requests >= 1  # the injected one, honoured
    async with sessionmaker() as session:
        rows = (await session.execute(select(Outbox))).scalars().all()
        statuses = (await session.execute(select(Sponsorship.status))).scalars().all()
    assert {row.status for row in rows} == {OutboxStatus.SENT}
    assert set(statuses) == {SponsorshipStatus.ACTIVE}


async def test_a_payment_recorded_with_a_receipt_photo_and_confirmed_over_telegram(
    settings: Settings,
    server: FakeTelegramServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    from storage.models import Payment

    clock = FrozenClock()
    asn = TelegramUser(server, ASN_ID)
    pic = TelegramUser(server, PIC_ID)
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        await register(asn)
        await activate(server, asn, pic, {WORKER_NIK: "Siti Aminah"})

        await asn.say("/bayar")
        assert "Bulan berikutnya yang harus dibayar: Desember 2026" in asn.text
        await asn.press("3 bulan")
        await asn.press("sesuai tarif")
        await asn.send(server.photo_update(ASN_ID, "AgACAgUAAxkBAAIKPL"))
        assert "Bukti bayar: ada" in asn.text
        await asn.press("Catat pembayaran")
        assert "menunggu konfirmasi PIC" in asn.text
        await pic.say("pic")
        await pic.press("Konfirmasi pembayaran (1)")
        assert "Rp50.400" in pic.text
        # The PIC sees the receipt photo itself, sent again by its file_id.
        assert server.resent == [ResentFile("sendPhoto", PIC_ID, "AgACAgUAAxkBAAIKPL")]
        await pic.press("Konfirmasi")
        assert "Pembayaran dikonfirmasi" in pic.text
        await asn.say("/pekerja")
        assert "Dibayar sampai: Februari 2027" in asn.text
    async with sessionmaker() as session:
        payment = (await session.execute(select(Payment))).scalar_one()
    assert payment.receipt_file_ref == "AgACAgUAAxkBAAIKPL"  # the largest size, by reference
    assert payment.status.value == "confirmed"


async def test_two_workers_paid_with_one_receipt_photo_over_telegram(
    settings: Settings,
    server: FakeTelegramServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    from storage.models import Payment

    clock = FrozenClock()
    asn = TelegramUser(server, ASN_ID)
    pic = TelegramUser(server, PIC_ID)
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        await register(asn)
        await activate(server, asn, pic, {WORKER_NIK: "Siti Aminah", OTHER_NIK: "Joko Susilo"})

        await asn.say("/bayar")
        assert "2. Joko Susilo – KPJ 12345678902" in asn.text
        await asn.press("Semua pekerja (2)")
        await asn.press("3 bulan per pekerja")
        assert "Total iuran untuk 2 pekerja Rp100.800" in asn.text
        await asn.press("sesuai tarif")
        await asn.send(server.photo_update(ASN_ID, "AgACAgUAAxkBAAIKPM"))
        assert "• Siti Aminah: Desember 2026–Februari 2027 (3 bulan), Rp50.400" in asn.text
        assert "Total: Rp100.800" in asn.text
        await asn.press("Catat pembayaran")
        assert "Pembayaran untuk 2 pekerja tercatat" in asn.text
        await pic.say("pic")
        await pic.press("Konfirmasi pembayaran (2)")
        assert "satu bukti untuk 2 pekerja" in pic.text
        await pic.press("Konfirmasi")
        await pic.press("Konfirmasi")
        assert "Tidak ada pembayaran yang menunggu konfirmasi" in pic.text
        await asn.say("/pekerja")
        assert asn.text.count("Dibayar sampai: Februari 2027") == 2
    async with sessionmaker() as session:
        rows = (await session.execute(select(Payment).order_by(Payment.id))).scalars().all()
    assert [(p.months, p.amount, p.receipt_file_ref) for p in rows] == [
        (3, 50_400, "AgACAgUAAxkBAAIKPM"),
        (3, 50_400, "AgACAgUAAxkBAAIKPM"),
    ]
    assert {p.status.value for p in rows} == {"confirmed"}
