"""Issue 12 item 7: every end of every PIC flow leaves the PIC with options.

Each journey walks a PIC flow to one of its ends (done, stop, cancel, empty
queue, an error, the last item handled) on Telegram, WhatsApp and the console, and checks
with `assert_way_on` that the last reply offers options as the engine says and
as the console, Telegram and WhatsApp show them.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from storage.audit import Actor
from storage.models import Opd
from storage.roles import appoint
from tests.fakes.chat import OTHER_NIK, WORKER_NIK, Chat
from tests.fakes.ways_on import assert_way_on
from tests.fakes.workbench import Office, activate, appoint_pic, build_office

WHATSAPP_PIC = "6281300000001"


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker)


#: A second PIC of Dinas Kesehatan per channel (the office's own PIC is on Telegram).
OTHER_CHANNEL_PICS = {Channel.WHATSAPP: WHATSAPP_PIC, Channel.CONSOLE: "pic"}


@pytest.fixture(params=[Channel.TELEGRAM, Channel.WHATSAPP, Channel.CONSOLE])
async def pic(request: pytest.FixtureRequest, office: Office) -> Chat:
    """Dinas Kesehatan's PIC on Telegram, or a second PIC of it on WhatsApp or the console."""
    channel: Channel = request.param
    if channel is Channel.TELEGRAM:
        return office.pic
    sender = OTHER_CHANNEL_PICS[channel]
    async with office.sessionmaker.kw["bind"].begin() as connection:
        opd_id = (
            await connection.execute(select(Opd.id).where(Opd.code == "BKL-DINKES"))
        ).scalar_one()
        await appoint(
            connection,
            opd_id=opd_id,
            channel=channel,
            external_id=sender,
            phone_e164=None,
            actor=Actor.admin("test-admin"),
            now=office.clock(),
        )
    phone = "+" + sender if channel is Channel.WHATSAPP else None
    return Chat(office.engine, office.clock, sender=sender, channel=channel, sender_phone=phone)


async def open_queue(pic: Chat) -> None:
    await pic.say("pic")
    assert_way_on(pic.replies)
    await pic.press("Periksa pendaftaran")
    assert_way_on(pic.replies)


# -- the verification queue ------------------------------------------------------------


async def test_an_empty_queue_leads_back_to_the_pic_menu(office: Office, pic: Chat) -> None:
    await open_queue(pic)
    assert "Tidak ada pendaftaran yang menunggu" in pic.text
    assert "PIC Dinas Kesehatan" in pic.text


async def test_accepting_the_last_enrollment_ends_on_the_pic_menu(
    office: Office, pic: Chat
) -> None:
    await office.enroll_two()
    await open_queue(pic)
    await pic.press("Terima")
    assert_way_on(pic.replies)
    await pic.press("Terima")
    assert "Joko Susilo diterima" in pic.text
    assert "Tidak ada pendaftaran yang menunggu" in pic.text
    assert_way_on(pic.replies)
    assert any("Periksa pendaftaran (0)" in label for label in pic.labels())


async def test_returning_the_last_enrollment_with_typed_words_ends_with_options(
    office: Office, pic: Chat
) -> None:
    await office.enroll()
    await open_queue(pic)
    await pic.press("Kembalikan")
    assert_way_on(pic.replies)
    await pic.say("Foto KTP buram, kirim ulang")
    assert "Dikembalikan ke ASN" in pic.text
    assert_way_on(pic.replies)


async def test_skipping_the_last_one_stop_and_cancel_end_with_options(
    office: Office, pic: Chat
) -> None:
    await office.enroll()
    await open_queue(pic)
    await pic.press("Lewati")
    assert "Tidak ada pendaftaran yang menunggu" in pic.text
    assert_way_on(pic.replies)
    await open_queue(pic)
    await pic.press("Selesai")
    assert_way_on(pic.replies)
    await open_queue(pic)
    await pic.say("batal")
    assert_way_on(pic.replies)


async def test_an_enrollment_handled_by_another_pic_meanwhile_ends_with_options(
    office: Office, pic: Chat
) -> None:
    await appoint_pic(office.sessionmaker, office.clock, telegram_id="2002", opd_code="BKL-DINKES")
    colleague = Chat(office.engine, office.clock, sender="2002")
    await office.enroll()
    await open_queue(pic)
    accept = next(option.id for option in pic.options if "Terima" in option.label)
    await open_queue(colleague)
    await colleague.press("Terima")
    # The queue emptied under the PIC: asking for help shows the question, which has a way out.
    await pic.say("bantuan")
    assert "Siti Aminah sudah diproses PIC lain" in pic.text
    assert_way_on(pic.replies)
    await pic.press_id(accept)  # the old button no longer accepts anything
    assert "Siti Aminah sudah diproses PIC lain" in pic.text
    assert_way_on(pic.replies)
    await pic.press("Berikutnya")
    assert "Tidak ada pendaftaran yang menunggu" in pic.text
    assert "PIC Dinas Kesehatan" in pic.text
    assert_way_on(pic.replies)
    # The same again, now answering the stale enrollment: "already handled", then options.
    await office.enroll(nik=OTHER_NIK, name="Joko Susilo")
    await open_queue(pic)
    await open_queue(colleague)
    await colleague.press("Kembalikan")
    await colleague.press("Alamat")
    await pic.press("Terima")
    assert "Joko Susilo sudah diproses PIC lain" in pic.text
    assert_way_on(pic.replies)
    await pic.press("Kembali ke menu PIC")
    assert "PIC Dinas Kesehatan" in pic.text
    assert_way_on(pic.replies)


# -- payments ------------------------------------------------------------------------------


async def test_every_end_of_the_payment_queue_has_options(office: Office, pic: Chat) -> None:
    await pic.say("pic")
    await pic.press("Konfirmasi pembayaran")
    assert "Tidak ada pembayaran yang menunggu" in pic.text
    assert_way_on(pic.replies)

    await activate(office, (WORKER_NIK, "Siti Aminah"))
    await office.record_payment()
    await pic.say("pic")
    await pic.press("Konfirmasi pembayaran")
    assert_way_on(pic.replies)
    await pic.press("Lewati")
    assert "Tidak ada pembayaran yang menunggu" in pic.text
    assert_way_on(pic.replies)
    await pic.say("pic")
    await pic.press("Konfirmasi pembayaran")
    await pic.press("Selesai")
    assert_way_on(pic.replies)
    await pic.say("pic")
    await pic.press("Konfirmasi pembayaran")
    await pic.press("Tolak")
    assert_way_on(pic.replies)
    await pic.say("Bukti transfer tidak terbaca")
    assert "Tidak ada pembayaran yang menunggu" in pic.text
    assert_way_on(pic.replies)

    await office.record_payment()
    await pic.say("pic")
    await pic.press("Konfirmasi pembayaran")
    await pic.press("Konfirmasi")
    assert "Tidak ada pembayaran yang menunggu" in pic.text
    assert_way_on(pic.replies)


# -- cards ------------------------------------------------------------------------------


async def test_every_end_of_the_card_hand_over_has_options(office: Office, pic: Chat) -> None:
    await pic.say("pic")
    await pic.press("Kartu diserahkan")
    assert "Tidak ada kartu yang menunggu" in pic.text
    assert_way_on(pic.replies)

    await activate(office, (WORKER_NIK, "Siti Aminah"))
    await pic.say("pic")
    await pic.press("Kartu diserahkan")
    assert_way_on(pic.replies)
    await pic.say("123")
    assert "11 angka" in pic.text
    assert_way_on(pic.replies)
    await pic.say("batal")
    assert_way_on(pic.replies)
    await pic.say("pic")
    await pic.press("Kartu diserahkan")
    await pic.press("Siti Aminah")
    assert "sudah diserahkan" in pic.text
    assert_way_on(pic.replies)


# -- one-screen actions ------------------------------------------------------------------


async def test_export_import_and_lists_end_with_options(office: Office, pic: Chat) -> None:
    await pic.say("pic")
    for label in ("Ekspor", "Berkas yang pernah", "Impor", "Peserta menunggak"):
        await pic.say("pic")
        await pic.press(label)
        assert_way_on(pic.replies)
    await pic.send_document("kpj.csv", b"nothing useful\n")
    assert_way_on(pic.replies)

    await office.enroll()
    await pic.say("pic")
    await pic.press("Periksa pendaftaran")
    await pic.press("Terima")
    await pic.press("Ekspor")
    assert pic.documents
    assert_way_on(pic.replies)
    await pic.press("Sudah dikirim ke BPJS")
    assert_way_on(pic.replies)
    await pic.send_document("kpj.csv", f"NIK,KPJ\n{WORKER_NIK},90000000001\n".encode())
    assert_way_on(pic.replies)
    apply = next(option.id for option in pic.options if "Terapkan" in option.label)
    await pic.press_id(apply)
    assert_way_on(pic.replies)
    await pic.press_id(apply)
    assert "sudah diterapkan atau dibatalkan" in pic.text
    assert_way_on(pic.replies)
