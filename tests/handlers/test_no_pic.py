"""Issue 12 item 2: an OPD without a PIC is said plainly, the administrator is told, and
"contact the PIC" names a reachable person or says there is none."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from handlers import staffing
from storage.admins import remove_admin
from storage.audit import Actor
from storage.models import ChannelAccount, Opd, Outbox, Pic
from storage.outbox import enqueue
from storage.roles import appoint, remove
from tests.fakes.chat import OTHER_NIK, WORKER_NIK, Chat, build_engine, engine_config
from tests.fakes.staff import ADMIN_ID, appoint_admin_account, name_account
from tests.fakes.workbench import PIC_ID, appoint_pic, build_office


async def outbox(sessionmaker: async_sessionmaker[AsyncSession], kind: str) -> list[Outbox]:
    async with sessionmaker() as session:
        rows = await session.execute(select(Outbox).where(Outbox.kind == kind).order_by(Outbox.id))
        return list(rows.scalars())


async def test_enrolling_where_there_is_no_pic_says_so_and_tells_the_administrator(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await appoint_admin_account(sessionmaker, asn.clock)
    await asn.enroll_until_summary()
    await asn.press("Kirim ke PIC")
    assert "menunggu pemeriksaan PIC" not in asn.text
    assert "Dinas Kesehatan belum punya PIC yang bisa memeriksanya" in asn.text
    assert "Administrator program sudah diberi tahu" in asn.text
    assert "Menu utama" in asn.question.text
    (notice,) = await outbox(sessionmaker, "no_pic")
    assert notice.recipient == ADMIN_ID
    assert "Dinas Kesehatan (BKL-DINKES) belum punya PIC" in notice.body
    assert "menunggu pemeriksaan: 1" in notice.body
    assert "sertakan pic appoint --opd BKL-DINKES" in notice.body
    # A second enrollment the same day does not tell the administrator again.
    await asn.enroll_until_summary(nik=OTHER_NIK, name="Joko Susilo")
    await asn.press("Kirim ke PIC")
    assert "Dinas Kesehatan belum punya PIC" in asn.text
    assert len(await outbox(sessionmaker, "no_pic")) == 1


async def test_without_pic_or_administrator_the_bot_says_that_too(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await asn.enroll_until_summary()
    await asn.press("Kirim ke PIC")
    assert "belum punya PIC yang bisa memeriksanya" in asn.text
    assert "belum ada administrator program yang terhubung ke bot" in asn.text
    assert "sudah diberi tahu" not in asn.text
    assert await outbox(sessionmaker, "no_pic") == []


async def test_a_phone_appointment_nobody_claimed_is_no_reachable_pic(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker.kw["bind"].begin() as connection:
        opd_id = (
            await connection.execute(select(Opd.id).where(Opd.code == "BKL-DINKES"))
        ).scalar_one()
        await appoint(
            connection,
            opd_id=opd_id,
            channel=None,
            external_id=None,
            phone_e164="+6281311112222",
            actor=Actor.admin("test-admin"),
            now=asn.clock(),
        )
    await asn.enroll_until_summary()
    await asn.press("Kirim ke PIC")
    assert "Dinas Kesehatan belum punya PIC" in asn.text


async def test_with_a_pic_the_enrollment_waits_for_them(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll()
    assert "menunggu pemeriksaan PIC Dinas Kesehatan" in office.asn.text
    assert await outbox(sessionmaker, "no_pic") == []


async def test_the_limit_refusal_names_the_pic_to_contact(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker, config=engine_config(max_workers_per_asn=1))
    await name_account(sessionmaker, PIC_ID, "Rina Wati")
    await office.enroll()
    await office.asn.say("/daftar")
    assert "Bila perlu menambah: Hubungi PIC Dinas Kesehatan: Rina Wati." in office.asn.text
    assert office.asn.labels()  # a way on


async def test_the_limit_refusal_without_a_pic_says_there_is_none(
    sessionmaker: async_sessionmaker[AsyncSession], asn: Chat
) -> None:
    limited = Chat(
        build_engine(sessionmaker, asn.clock, engine_config(max_workers_per_asn=1)),
        asn.clock,
    )
    await appoint_admin_account(sessionmaker, asn.clock)
    await limited.enroll_until_summary()
    await limited.press("Kirim ke PIC")
    await limited.say("/daftar")
    assert "Hubungi PIC" not in limited.text
    assert "Dinas Kesehatan belum punya PIC; administrator program sudah diberi tahu" in (
        limited.text
    )


async def test_a_nik_sponsored_elsewhere_names_that_opds_pic(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await name_account(sessionmaker, PIC_ID, "Rina Wati")
    await office.enroll()
    other = Chat(office.engine, office.clock, sender="1002")
    await other.register(
        nip="199001012015032001",
        name="Ani Lestari",
        opd_query="pendidikan",
        opd_label="Dinas Pendidikan",
    )
    await other.say("/daftar")
    await other.press("Bekerja untuk saya")
    await other.press("Asisten rumah tangga")
    await other.say("Siti Aminah")
    await other.say(WORKER_NIK)
    assert "Bila menurut Anda ini keliru: Hubungi PIC Dinas Kesehatan: Rina Wati." in other.text
    assert await outbox(sessionmaker, "no_pic") == []


async def test_a_nik_sponsored_in_an_opd_without_pic_tells_the_administrator(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await asn.enroll_until_summary()
    await asn.press("Kirim ke PIC")
    await appoint_admin_account(sessionmaker, asn.clock)
    # The other ASN's OPD has a PIC; the worker's enrollment is in Dinas Kesehatan, which has none.
    await appoint_pic(sessionmaker, asn.clock, telegram_id="3001", opd_code="BKL-DIKBUD")
    other = Chat(asn.engine, asn.clock, sender="1002")
    await other.register(
        nip="199001012015032001",
        name="Ani Lestari",
        opd_query="pendidikan",
        opd_label="Dinas Pendidikan",
    )
    await other.say("/daftar")
    await other.press("Bekerja untuk saya")
    await other.press("Asisten rumah tangga")
    await other.say("Siti Aminah")
    await other.say(WORKER_NIK)
    assert "Dinas Kesehatan belum punya PIC; administrator program sudah diberi tahu" in (
        other.text
    )
    (notice,) = await outbox(sessionmaker, "no_pic")
    assert notice.recipient == ADMIN_ID and notice.channel is Channel.TELEGRAM


async def test_a_pic_appointed_by_id_is_named_once_they_have_written(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.asn.say("tanya")
    assert "dikirim ke PIC Dinas Kesehatan." in office.asn.text  # no name known yet
    await office.asn.say("batal")
    await office.pic.say("/start", display_name="Rina Wati")
    await office.asn.say("tanya")
    assert "dikirim ke PIC Dinas Kesehatan: Rina Wati." in office.asn.text


async def test_a_correction_sent_back_after_the_pic_left_says_there_is_none(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await appoint_admin_account(sessionmaker, office.clock)
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Kembalikan")
    await office.pic.press("Nama tidak sesuai KTP")
    async with sessionmaker.kw["bind"].begin() as connection:
        pic_id = (
            await connection.execute(
                select(Pic.id).join(ChannelAccount).where(ChannelAccount.external_id == PIC_ID)
            )
        ).scalar_one()
        await remove(connection, pic_id=pic_id, actor=Actor.admin("test-admin"), now=office.clock())
    await office.asn.say("/pekerja")
    await office.asn.press("Perbaiki: Siti Aminah")
    await office.asn.press("Kirim ulang ke PIC")
    assert "kembali menunggu pemeriksaan PIC" not in office.asn.text
    assert "Dinas Kesehatan belum punya PIC yang bisa memeriksanya" in office.asn.text
    (notice,) = await outbox(sessionmaker, "no_pic")
    assert notice.recipient == ADMIN_ID


# --- stepcost: the notice's work skipped once everybody was told today ----------------


def nik(serial: int) -> str:
    """WORKER_NIK with another serial: the same valid woman born 7 Aug 1990."""
    return f"{WORKER_NIK[:12]}{serial:04d}"


class CountingEnqueue:
    """`storage.outbox.enqueue` as the no-PIC notice calls it, counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, connection: Any, notice: Any, **kwargs: Any) -> bool:
        self.calls += 1
        return await enqueue(connection, notice, **kwargs)


async def test_the_administrators_are_told_once_a_day_and_later_enrollments_skip_the_notice(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingEnqueue()
    monkeypatch.setattr(staffing, "enqueue", counting)
    await appoint_admin_account(sessionmaker, asn.clock)
    await asn.enroll_until_summary(nik=nik(1))
    await asn.press("Kirim ke PIC")
    assert counting.calls == 1
    assert "Administrator program sudah diberi tahu" in asn.text

    # The same day: the reply is the same, and nothing of the notice is done again.
    await asn.enroll_until_summary(nik=nik(2))
    await asn.press("Kirim ke PIC")
    assert "Administrator program sudah diberi tahu" in asn.text
    assert counting.calls == 1

    # After a restart (a new engine on the same database) too: it is read from the outbox.
    restarted = Chat(build_engine(sessionmaker, asn.clock), asn.clock, sender=asn.sender)
    await restarted.enroll_until_summary(nik=nik(3))
    await restarted.press("Kirim ke PIC")
    assert "Administrator program sudah diberi tahu" in restarted.text
    assert counting.calls == 1
    assert [n.recipient for n in await outbox(sessionmaker, "no_pic")] == [ADMIN_ID]

    # An administrator appointed later that day is told, the first one not again.
    await appoint_admin_account(sessionmaker, asn.clock, external_id="9002")
    await restarted.enroll_until_summary(nik=nik(4))
    await restarted.press("Kirim ke PIC")
    notices = await outbox(sessionmaker, "no_pic")
    assert [n.recipient for n in notices] == [ADMIN_ID, "9002"]
    assert "menunggu pemeriksaan: 4" in notices[1].body

    # The next local day, both are told again.
    asn.clock.advance(timedelta(days=1))
    await restarted.enroll_until_summary(nik=nik(5))
    await restarted.press("Kirim ke PIC")
    notices = await outbox(sessionmaker, "no_pic")
    assert [n.recipient for n in notices] == [ADMIN_ID, "9002", ADMIN_ID, "9002"]
    assert len({n.dedupe_key for n in notices}) == 4


async def test_a_pic_appointed_after_the_administrators_were_told_is_waited_for(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await appoint_admin_account(sessionmaker, asn.clock)
    await asn.enroll_until_summary(nik=nik(1))
    await asn.press("Kirim ke PIC")
    assert "Administrator program sudah diberi tahu" in asn.text
    await appoint_pic(sessionmaker, asn.clock, telegram_id="3001", opd_code="BKL-DINKES")
    await asn.enroll_until_summary(nik=nik(2))
    await asn.press("Kirim ke PIC")
    assert "menunggu pemeriksaan PIC Dinas Kesehatan" in asn.text
    assert "belum punya PIC" not in asn.text
    assert len(await outbox(sessionmaker, "no_pic")) == 1


async def test_an_administrator_removed_after_being_told_is_not_counted_as_told(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    admin_id = await appoint_admin_account(sessionmaker, asn.clock)
    await asn.enroll_until_summary(nik=nik(1))
    await asn.press("Kirim ke PIC")
    async with sessionmaker.kw["bind"].begin() as connection:
        await remove_admin(
            connection, admin_id=admin_id, actor=Actor.admin("test-admin"), now=asn.clock()
        )
    await asn.enroll_until_summary(nik=nik(2))
    await asn.press("Kirim ke PIC")
    assert "belum ada administrator program yang terhubung ke bot" in asn.text
    assert "sudah diberi tahu" not in asn.text
