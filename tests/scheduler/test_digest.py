"""The PIC digest: working days only, only with something new, once per PIC per day."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.workdays import WorkCalendar
from handlers.i18n import Catalogs
from scheduler.digest import DigestPlanner
from storage.models import Outbox
from tests.fakes.chat import OTHER_NIK, Chat, build_engine, seed_opds
from tests.fakes.clock import FrozenClock
from tests.fakes.staff import ADMIN_ID, appoint_admin_account
from tests.fakes.workbench import PIC_ID, Office, appoint_pic, build_office

#: Monday 23 November 2026, 08:30 in Jakarta.
MONDAY_0830 = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker)


def planner(office: Office, holidays: tuple[date, ...] = ()) -> DigestPlanner:
    return DigestPlanner(
        office.sessionmaker.kw["bind"],
        Catalogs(),
        office.clock,
        timezone=ZoneInfo("Asia/Jakarta"),
        calendar=WorkCalendar(holidays),
        send_at=time(8, 0),
    )


async def test_digest_lists_new_work_once_per_day(office: Office) -> None:
    await office.enroll()
    office.clock.now = MONDAY_0830
    assert await planner(office).plan() == 1
    assert await planner(office).plan() == 0  # a second run (or process) the same day
    (digest,) = await office.outbox("digest")
    assert digest.recipient == PIC_ID
    assert digest.dedupe_key.endswith(":2026-11-23")
    assert "Menunggu pemeriksaan: 1 (1 baru)" in digest.body
    assert "1 dari 1 ASN terdaftar" in digest.body
    # Tuesday: nothing new, no digest; Wednesday after a new enrollment: one.
    office.clock.advance(timedelta(days=1))
    assert await planner(office).plan() == 0
    office.clock.advance(timedelta(days=1))
    await office.enroll(nik=OTHER_NIK, name="Joko Susilo")
    assert await planner(office).plan() == 1
    latest = (await office.outbox("digest"))[-1]
    assert "Menunggu pemeriksaan: 2 (1 baru)" in latest.body


async def test_no_digest_on_weekends_holidays_or_before_the_hour(office: Office) -> None:
    await office.enroll()
    office.clock.now = MONDAY_0830 - timedelta(days=2)  # Saturday
    assert await planner(office).plan() == 0
    office.clock.now = MONDAY_0830
    assert await planner(office, holidays=(date(2026, 11, 23),)).plan() == 0
    office.clock.now = MONDAY_0830 - timedelta(hours=1)  # 07:30 local
    assert await planner(office).plan() == 0
    assert await office.outbox("digest") == []


async def test_nothing_new_means_no_digest(office: Office) -> None:
    office.clock.now = MONDAY_0830
    assert await planner(office).plan() == 0
    assert await office.outbox("digest") == []


async def test_payments_to_confirm_are_news_for_the_digest(office: Office) -> None:
    from tests.fakes.chat import WORKER_NIK
    from tests.fakes.workbench import activate

    await activate(office, (WORKER_NIK, "Siti Aminah"))
    office.clock.now = MONDAY_0830
    assert await planner(office).plan() == 1  # the card to hand out
    office.clock.advance(timedelta(days=1))
    assert await planner(office).plan() == 0
    await office.record_payment()
    office.clock.advance(timedelta(days=1))
    assert await planner(office).plan() == 1
    latest = (await office.outbox("digest"))[-1]
    assert "Pembayaran menunggu konfirmasi: 1 (1 baru)" in latest.body


async def test_sponsors_in_arrears_are_in_the_digest(office: Office) -> None:
    from tests.fakes.chat import WORKER_NIK
    from tests.fakes.workbench import activate

    await activate(office, (WORKER_NIK, "Siti Aminah"))  # first month December 2026
    # Monday 15 February 2027, 08:30: December and January are past due and unpaid.
    office.clock.now = datetime(2027, 2, 15, 1, 30, tzinfo=UTC)
    assert await planner(office).plan() == 1
    latest = (await office.outbox("digest"))[-1]
    assert "Peserta menunggak: 1 (1 sudah 2 bulan atau lebih" in latest.body
    await office.pic.say("pic")
    await office.pic.press("Peserta menunggak")
    assert "Siti Aminah (sponsor Budi Santoso): 2 bulan, sejak Desember 2026" in office.pic.text


def at_0830(day: date) -> datetime:
    """08:30 in Jakarta on `day`."""
    return datetime.combine(day, time(1, 30), tzinfo=UTC)


async def test_a_sponsor_two_months_behind_brings_the_digest_once(office: Office) -> None:
    from tests.fakes.chat import WORKER_NIK
    from tests.fakes.workbench import activate

    await activate(office, (WORKER_NIK, "Siti Aminah"))  # first month December 2026
    office.clock.now = MONDAY_0830
    assert await planner(office).plan() == 1  # the card to hand out
    # Thursday 14 January 2027: December is one month behind; not yet news.
    office.clock.now = at_0830(date(2027, 1, 14))
    assert await planner(office).plan() == 0
    # Monday 18 January: January's due date (Friday the 15th) has passed too.
    office.clock.now = at_0830(date(2027, 1, 18))
    assert await planner(office).plan() == 1
    assert await planner(office).plan() == 0  # the same day again: the key holds
    latest = (await office.outbox("digest"))[-1]
    assert "Menunggak 2 bulan atau lebih: 1 (1 baru)" in latest.body
    assert "Siti Aminah (sponsor Budi Santoso): 2 bulan, sejak Desember 2026 🆕" in latest.body
    # Tuesday: still two months behind, but the PIC was told yesterday.
    office.clock.now = at_0830(date(2027, 1, 19))
    assert await planner(office).plan() == 0


async def test_a_lapse_brings_the_digest_naming_it(office: Office) -> None:
    from tests.fakes.chat import WORKER_NIK
    from tests.fakes.workbench import activate

    await activate(office, (WORKER_NIK, "Siti Aminah"))
    office.clock.now = at_0830(date(2027, 1, 18))
    assert await planner(office).plan() == 1  # the card, and two months behind
    # Tuesday 16 February: a third due date passed; the 06:00 reminder run lapses it.
    office.clock.now = datetime(2027, 2, 15, 23, 0, tzinfo=UTC)
    await office.plan_reminders()
    (row,) = await office.sponsorships()
    assert row.status.value == "lapsed"
    office.clock.now = at_0830(date(2027, 2, 16))
    assert await planner(office).plan() == 1
    latest = (await office.outbox("digest"))[-1]
    assert "Kepesertaan nonaktif sejak ringkasan sebelumnya" in latest.body
    assert "• Siti Aminah (sponsor Budi Santoso)" in latest.body
    office.clock.now = at_0830(date(2027, 2, 17))
    assert await planner(office).plan() == 0


async def test_a_question_to_the_pic_is_news_for_the_digest(office: Office) -> None:
    office.clock.now = MONDAY_0830
    await office.asn.say("tanya")
    await office.asn.say("Kapan kartu pekerja saya terbit?")
    await office.asn.press("Kirim")
    assert await planner(office).plan() == 1
    (digest,) = await office.outbox("digest")
    assert "Pertanyaan terbuka: 1 (1 baru)" in digest.body


async def test_administrators_hear_every_working_day_of_opds_without_pic(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    asn = Chat(build_engine(sessionmaker, clock), clock)
    await asn.register()  # Dinas Kesehatan, which has no PIC
    await asn.enroll_until_summary()
    await asn.press("Kirim ke PIC")
    await appoint_admin_account(sessionmaker, clock)
    clock.now = MONDAY_0830

    def admin_planner() -> DigestPlanner:
        return DigestPlanner(
            sessionmaker.kw["bind"],
            Catalogs(),
            clock,
            timezone=ZoneInfo("Asia/Jakarta"),
            calendar=WorkCalendar(()),
            send_at=time(8, 0),
        )

    async def admin_digests() -> list[str]:
        async with sessionmaker() as session:
            rows = await session.execute(
                select(Outbox).where(Outbox.kind == "admin_digest").order_by(Outbox.id)
            )
            return [f"{row.recipient}|{row.dedupe_key}|{row.body}" for row in rows.scalars()]

    assert await admin_planner().plan() == 1
    assert await admin_planner().plan() == 0  # once a day
    (digest,) = await admin_digests()
    assert digest.startswith(f"{ADMIN_ID}|admin_digest:admin:")
    assert "OPD tanpa PIC yang punya pekerjaan menunggu: 1" in digest
    assert "Dinas Kesehatan (BKL-DINKES): 1 pendaftaran menunggu sejak" in digest
    assert "sertakan pic appoint" in digest
    # Still nobody there the next working day: told again.
    clock.advance(timedelta(days=1))
    assert await admin_planner().plan() == 1
    # Once a PIC is appointed the OPD leaves the administrators' digest (the PIC gets theirs).
    await appoint_pic(sessionmaker, clock, telegram_id="2001", opd_code="BKL-DINKES")
    clock.advance(timedelta(days=1))
    await admin_planner().plan()
    assert len(await admin_digests()) == 2
