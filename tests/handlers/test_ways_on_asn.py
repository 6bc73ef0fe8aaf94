"""Issue 12 item 7 for the ASN and the worker: every end of every flow leaves options.

Each journey walks one ASN or worker flow (registration, enrollment, payment,
plan change, stop sponsoring, correction, consent, a question and its answer,
erasure) to each of its ends: done, cancelled, a refused or empty start, and
an error that ends or refuses (a NIK already enrolled, an age outside the
bounds). The ASN writes on Telegram, WhatsApp or the console (`person`), and
`assert_way_on` checks every end as the engine, the console, Telegram and
WhatsApp show it. The worker is a WhatsApp number or, through the forwarded
link, a Telegram account.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from handlers import actions
from tests.fakes.chat import OTHER_NIK, WORKER_NIK, Chat, engine_config
from tests.fakes.ways_on import assert_way_on
from tests.fakes.workbench import Office, activate, build_office

#: The ASN of each channel: (sender, the number WhatsApp vouches for, NIP, typed phone).
PEOPLE = {
    Channel.TELEGRAM: ("1001", None, None, None),
    Channel.WHATSAPP: ("6281277770001", "+6281277770001", "199001152023211005", None),
    Channel.CONSOLE: ("budi", None, "198706202014022001", "081311112222"),
}
CHILD_NIK = "3201010101150001"  # born 1 January 2015: 11 years old in December 2026
WORKER_WA_ID = "6281298765432"  # the phone `enroll_until_summary` types for the worker
LINK = re.compile(r"https://t\.me/sertakan_bot\?start=(c_[A-Za-z0-9_-]+)")


def ends(chat: Chat, *said: str) -> None:
    """The last event ended with `said` in its replies and the person has options."""
    for text in said:
        assert text in chat.text, chat.text
    assert_way_on(chat.replies)


async def register(chat: Chat, nip: str, phone: str | None) -> None:
    """Registration as each channel asks it (WhatsApp knows the number; the console types it)."""
    await chat.say("/start")
    await chat.press("Daftar sebagai ASN")
    await chat.press("Setuju")
    await chat.say(nip)
    await chat.say("Budi Santoso")
    await chat.say("kesehatan")
    await chat.press("Dinas Kesehatan")
    if phone is not None:
        await chat.say(phone)
    await chat.press("Konfirmasi")
    assert "Budi Santoso" in chat.text


@pytest.fixture(params=list(PEOPLE), ids=lambda channel: str(channel))
async def office(
    request: pytest.FixtureRequest, sessionmaker: async_sessionmaker[AsyncSession]
) -> Office:
    """Dinas Kesehatan with its PIC; its ASN writes on the channel of the parameter."""
    built = await build_office(
        sessionmaker,
        worker_channel=Channel.WHATSAPP,
        config=engine_config(telegram_bot_username="sertakan_bot"),
    )
    channel: Channel = request.param
    if channel is Channel.TELEGRAM:
        return built
    sender, vouched, nip, phone = PEOPLE[channel]
    asn = Chat(built.engine, built.clock, sender=sender, channel=channel, sender_phone=vouched)
    assert nip is not None
    await register(asn, nip, phone)
    return dataclasses.replace(built, asn=asn)


def worker(office: Office) -> Chat:
    return Chat(
        office.engine,
        office.clock,
        sender=WORKER_WA_ID,
        channel=Channel.WHATSAPP,
        sender_phone="+" + WORKER_WA_ID,
    )


# -- registration ---------------------------------------------------------------------------


@pytest.mark.parametrize("channel", list(PEOPLE), ids=str)
async def test_every_end_of_registration_has_options(
    sessionmaker: async_sessionmaker[AsyncSession], channel: Channel
) -> None:
    office = await build_office(sessionmaker)
    sender, _, nip, phone = PEOPLE[channel]
    guest = Chat(office.engine, office.clock, sender=f"new-{sender}", channel=channel)
    if channel is Channel.WHATSAPP:
        guest = Chat(office.engine, office.clock, "6281288880001", channel, "+6281288880001")
    await guest.say("/start")
    ends(guest)
    await guest.press("Daftar sebagai ASN")
    await guest.press("Tidak setuju")
    ends(guest, "pendaftaran tidak dilanjutkan")
    await guest.press("Daftar sebagai ASN")
    await guest.press("Setuju")
    await guest.say(nip or "199001152023211005")
    await guest.say("batal")
    ends(guest, "Belum ada yang dikirim")
    await guest.press("Buang draf")
    ends(guest)
    await register(guest, nip or "199001152023211005", phone or "081311119999")
    ends(guest)
    await guest.press_id(actions.Register().pack())
    ends(guest)
    # Things only a registered ASN does, pressed by someone who is not one.
    stranger = Chat(office.engine, office.clock, sender=f"other-{sender}", channel=channel)
    for action in (actions.Pay(), actions.StopSponsoring(), actions.ChangePlan()):
        await stranger.press_id(action.pack())
        ends(stranger, "belum terdaftar sebagai ASN")


# -- enrollment -----------------------------------------------------------------------------


async def test_every_end_of_enrollment_has_options(office: Office) -> None:
    asn = office.asn
    await asn.enroll_until_summary()
    await asn.say("batal")
    ends(asn, "Belum ada yang dikirim")
    await asn.press("Buang draf")
    ends(asn)
    await asn.enroll_until_summary()
    await asn.press("Kirim ke PIC")
    ends(asn)
    # The NIK is enrolled already: only ways that can succeed, and cancelling ends with options.
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.press("Asisten rumah tangga")
    await asn.say("Siti Aminah")
    await asn.say(WORKER_NIK)
    ends(asn)
    await asn.press("Batalkan")
    ends(asn, "Pendaftaran dibatalkan")
    # Too young: the same.
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.press("Asisten rumah tangga")
    await asn.say("Anak Kecil")
    await asn.say(CHILD_NIK)
    ends(asn, "11 tahun")
    await asn.press("Batalkan")
    ends(asn, "Pendaftaran dibatalkan")


# -- payment, plan change, stop -----------------------------------------------------------


async def test_payment_plan_change_and_stop_refuse_to_start_with_options(office: Office) -> None:
    asn = office.asn
    for typed in ("/bayar", "/berhenti"):
        await asn.say(typed)
        ends(asn)
    await asn.press_id(actions.ChangePlan().pack())
    ends(asn, "Belum ada pekerja aktif")
    await asn.say("/pekerja")
    ends(asn)


async def test_every_end_of_payment_has_options(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    asn = office.asn
    await asn.say("bayar")
    assert_way_on(asn.replies)
    await asn.say("batal")
    ends(asn)
    await asn.press("Buang draf")
    await office.record_payment()
    ends(asn, "Pembayaran tercatat")


async def test_every_end_of_plan_change_has_options(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    asn = office.asn
    await asn.say("/pekerja")
    await asn.press("Ubah cara bayar")
    await asn.say("batal")
    ends(asn)
    await asn.say("/pekerja")
    await asn.press("Ubah cara bayar")
    await asn.press("Mulai dari awal")  # the worker chosen before "batal" is a draft
    await asn.press("tiga bulanan")
    assert_way_on(asn.replies)
    await asn.press("Ubah cara bayar")
    ends(asn, "Cara bayar diubah")


async def test_every_end_of_stop_sponsoring_has_options(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    asn = office.asn
    await asn.say("/berhenti")
    ends(asn)  # which worker
    await asn.press("Joko Susilo")
    await asn.press("Tidak lagi bekerja untuk saya")
    await asn.press("Tidak, tetap sponsori")
    ends(asn, "tetap mensponsori")
    await asn.say("/berhenti")
    await asn.press("Joko Susilo")
    await asn.press("Tidak lagi bekerja untuk saya")
    await asn.press("Ya, hentikan sponsor")
    ends(asn)


# -- correction -------------------------------------------------------------------------------


async def test_every_end_of_a_correction_has_options(office: Office) -> None:
    asn = office.asn
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Kembalikan")
    await office.pic.press("Alamat")
    await asn.say("/pekerja")
    await asn.press("Perbaiki: Siti Aminah")
    ends(asn)
    await asn.say("batal")
    ends(asn)
    await asn.press("Lanjutkan")
    await asn.press("Kirim ulang ke PIC")
    ends(asn)
    await asn.press_id(actions.Fix(999).pack())  # no longer returned, or not this ASN's
    ends(asn, "tidak ditemukan")


# -- consent --------------------------------------------------------------------------------


async def test_every_end_of_consent_has_options(office: Office) -> None:
    await office.enroll(consent=False)
    whatsapp = worker(office)
    await whatsapp.say("halo")
    ends(whatsapp)  # the consent question again
    await whatsapp.say("YA")
    ends(whatsapp)
    await whatsapp.say("YA")
    ends(whatsapp)  # answered already
    await whatsapp.press_id("consent:no:²")
    ends(whatsapp, "Tidak ada permintaan persetujuan")


async def test_every_end_of_the_telegram_consent_link_has_options(office: Office) -> None:
    asn = office.asn
    await office.enroll(consent=False)
    await asn.say("/pekerja")
    await asn.press("Minta persetujuan")
    ends(asn)
    match = LINK.search(asn.text)
    assert match is not None, asn.text
    linked = Chat(office.engine, office.clock, sender="7007")
    await linked.say(f"/start {match.group(1)}")
    ends(linked)
    await linked.say("batal")
    ends(linked)
    await linked.say(f"/start {match.group(1)}")
    await linked.press("YA, saya setuju")
    ends(linked)
    await linked.say(f"/start {match.group(1)}")
    ends(linked)  # used already
    await linked.say(f"/start {match.group(1)[:-1]}")
    ends(linked)  # not a link


# -- questions ------------------------------------------------------------------------------


async def test_every_end_of_asking_and_answering_has_options(office: Office) -> None:
    asn = office.asn
    await asn.say("tanya")
    await asn.say("batal")
    ends(asn)
    await asn.say("tanya")
    await asn.say("Kapan kartu BPJS pekerja saya terbit?")
    await asn.press("Batal")
    ends(asn)
    await asn.say("tanya")
    await asn.say("Kapan kartu BPJS pekerja saya terbit?")
    await asn.press("Kirim")
    ends(asn, "terkirim ke PIC")
    pic = office.pic
    await pic.say("pic")
    await pic.press("Pertanyaan masuk")
    await pic.press("Kapan kartu")
    await pic.press("Jawab")
    await pic.say("batal")
    ends(pic)
    await pic.say("pic")
    await pic.press("Pertanyaan masuk")
    await pic.press("Kapan kartu")
    await pic.press("Jawab")
    await pic.say("Minggu depan, setelah berkas dikirim ke BPJS.")
    await pic.press_id(next(o.id for o in pic.options if o.label == "📨 Kirim"))
    ends(pic)
    stranger = Chat(office.engine, office.clock, sender="8008")
    await stranger.say("tanya")
    ends(stranger, "Daftar dulu sebagai ASN")


async def test_a_worker_asks_and_ends_on_the_worker_menu(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    whatsapp = worker(office)
    await whatsapp.say("tanya")
    await whatsapp.say("batal")
    ends(whatsapp)
    await whatsapp.say("tanya")
    await whatsapp.say("Apakah kartu saya sudah aktif?")
    await whatsapp.press("Kirim")
    ends(whatsapp)
    assert any("STATUS" in label.upper() for label in whatsapp.labels())


# -- the worker's erasure -----------------------------------------------------------------------


async def test_every_end_of_erasure_has_options(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    whatsapp = worker(office)
    await whatsapp.say("status")
    ends(whatsapp)
    await whatsapp.say("hapus")
    ends(whatsapp)
    await whatsapp.say("batal")
    ends(whatsapp)
    await whatsapp.say("hapus")
    await whatsapp.press("Mulai dari awal")
    await whatsapp.press("Tidak, batalkan")
    ends(whatsapp, "tidak dihapus")
    await whatsapp.say("hapus")
    await whatsapp.press("Ya, hapus")
    ends(whatsapp, "sudah dihapus")
    await whatsapp.say("hapus")  # nothing left to erase
    ends(whatsapp)
    # The same words from the ASN's channel.
    await office.asn.say("hapus")
    ends(office.asn)
    await office.asn.say("status")
    ends(office.asn)


# -- the structure -------------------------------------------------------------------------------


def test_a_flow_that_does_not_say_where_it_leaves_cannot_be_written() -> None:
    from handlers.flow import Flow

    with pytest.raises(TypeError, match="does not declare where it leaves"):

        class Nowhere(Flow):
            name = "nowhere"
            title_key = "flow.title.nowhere"
            steps = ()
