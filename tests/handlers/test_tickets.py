"""Issue 12 item 23, "Tanya PIC": an ASN or worker asks a person; the PIC (or the
administrator, for an OPD without a PIC) answers from the chat; the answer reaches
the asker on their own channel; audited; closed by the PIC."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import AskerRole, Channel, TicketStatus
from scheduler.housekeeping import apply_retention
from storage.models import AuditLog, Ticket, TicketMessage
from tests.fakes.chat import Chat
from tests.fakes.staff import ADMIN_ID, appoint_admin_account, name_account
from tests.fakes.workbench import PIC_ID, Office, appoint_pic, build_office

WORKER_WA_ID = "6281298765432"
QUESTION = "Kapan kartu BPJS pekerja saya terbit?"
ANSWER = "Minggu depan, setelah BPJS memproses berkas kolektif."


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    office = await build_office(sessionmaker)
    await name_account(sessionmaker, PIC_ID, "Rina Wati")
    return office


async def tickets(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Ticket]:
    async with sessionmaker() as session:
        return list((await session.execute(select(Ticket).order_by(Ticket.id))).scalars())


async def audit_actions(sessionmaker: async_sessionmaker[AsyncSession]) -> list[tuple[str, str]]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(AuditLog.action, AuditLog.actor_type)
            .where(AuditLog.action.like("ticket.%"))
            .order_by(AuditLog.id)
        )
        return [(row.action, row.actor_type) for row in rows]


async def ask(chat: Chat, question: str = QUESTION) -> None:
    await chat.say("tanya")
    await chat.say(question)
    await chat.press("Kirim")


async def test_asn_asks_the_pic_who_answers_and_the_answer_reaches_the_asn(
    office: Office,
) -> None:
    asn = office.asn
    await asn.say("/start")
    # At the end of the menu, so the other entries keep their numbers.
    assert "Tanya PIC" in asn.labels()[-1]
    await asn.press("Tanya PIC")
    assert "dikirim ke PIC Dinas Kesehatan: Rina Wati" in asn.text
    await asn.say(QUESTION)
    assert QUESTION in asn.text
    assert asn.labels() == ["📨 Kirim", "✏️ Ubah", "❌ Batal"]
    await asn.press("Kirim")
    (ticket,) = await tickets(office.sessionmaker)
    assert f"Pertanyaan #{ticket.id} terkirim ke PIC Dinas Kesehatan (Rina Wati)" in asn.text
    assert "Menu utama" in asn.question.text  # a way on
    (notice,) = await office.outbox("ticket_new")
    assert notice.recipient == PIC_ID
    assert QUESTION in notice.body and "Budi Santoso" in notice.body
    assert notice.template == "ticket_new"

    pic = office.pic
    await pic.say("pic")
    assert "💬 Pertanyaan masuk (1)" in pic.labels()
    await pic.press("Pertanyaan masuk")
    assert "Pertanyaan terbuka: 1" in pic.text
    await pic.press(f"#{ticket.id} Budi Santoso")
    assert QUESTION in pic.text and "(ASN, Dinas Kesehatan)" in pic.text
    await pic.press("Jawab")
    await pic.say(ANSWER)
    assert "Kirim jawaban ini ke Budi Santoso?" in pic.text
    await pic.press("Kirim dan tutup")
    assert f"Jawaban untuk #{ticket.id} terkirim ke Budi Santoso, dan pertanyaan ditutup" in (
        pic.text
    )
    assert "Tidak ada pertanyaan terbuka" in pic.text
    assert pic.labels() == ["🗂 Kembali ke menu PIC", "🏠 Kembali ke menu"]

    (answer,) = await office.outbox("ticket_answer")
    assert (answer.channel, answer.recipient) == (Channel.TELEGRAM, "1001")
    assert ANSWER in answer.body and QUESTION in answer.body
    assert "PIC Dinas Kesehatan" in answer.body and "sudah ditutup" in answer.body
    (closed,) = await tickets(office.sessionmaker)
    assert closed.status is TicketStatus.CLOSED
    assert await audit_actions(office.sessionmaker) == [
        ("ticket.open", "asn"),
        ("ticket.answer", "pic"),
        ("ticket.close", "pic"),
    ]


async def test_the_pic_answers_keeps_it_open_then_closes_it_and_the_asker_is_told(
    office: Office,
) -> None:
    await ask(office.asn)
    (ticket,) = await tickets(office.sessionmaker)
    pic = office.pic
    await pic.press_id(f"g:tk:{ticket.id}")
    await pic.press("Jawab")
    await pic.say("??")  # says nothing: asked again, nothing sent
    assert "paling sedikit 3 huruf" in pic.text
    assert "Ketik jawaban Anda" in pic.text
    await pic.say("Sebentar, saya cek dulu.")
    await pic.press("Ubah")
    await pic.say(ANSWER)
    await pic.press_id(next(o.id for o in pic.options if o.label == "📨 Kirim"))
    assert "Pertanyaan tetap terbuka" in pic.text
    assert f"#{ticket.id} Budi Santoso" in pic.labels()[0]  # still in the list
    (answer,) = await office.outbox("ticket_answer")
    assert ANSWER in answer.body and "Sebentar" not in answer.body

    await pic.press(f"#{ticket.id}")
    assert ANSWER in pic.text  # the thread shows the answer given
    await pic.press("Tutup pertanyaan")
    assert f"Pertanyaan #{ticket.id} ditutup" in pic.text
    (closed,) = await office.outbox("ticket_closed")
    assert closed.recipient == "1001" and "sudah ditutup" in closed.body
    # A stale "Jawab" on the closed question answers nothing.
    await pic.press_id(f"g:tkr:{ticket.id}")
    assert "sudah ditutup" in pic.text
    async with office.sessionmaker() as session:
        count = len((await session.execute(select(TicketMessage))).all())
    assert count == 2


async def test_another_opds_pic_cannot_see_or_answer_the_question(office: Office) -> None:
    await ask(office.asn)
    (ticket,) = await tickets(office.sessionmaker)
    other = office.other_pic
    await other.say("pic")
    assert "💬 Pertanyaan masuk (0)" in other.labels()
    for forged in (f"g:tk:{ticket.id}", f"g:tkr:{ticket.id}", f"g:tkc:{ticket.id}"):
        await other.press_id(forged)
        assert "tidak ditemukan" in other.text
        assert other.labels()  # a way on
    (unchanged,) = await tickets(office.sessionmaker)
    assert unchanged.status is TicketStatus.OPEN
    # And the ASN is no PIC at all.
    await office.asn.press_id("g:tickets")
    assert "khusus untuk PIC OPD" in office.asn.text


async def test_a_question_that_says_nothing_is_asked_again_and_cancel_sends_nothing(
    office: Office,
) -> None:
    asn = office.asn
    await asn.say("tanya")
    await asn.say("1")  # not the first button ("Batal"): a question that says nothing
    assert "paling sedikit 3 huruf" in asn.text
    await asn.say("1234")
    assert "paling sedikit 3 huruf" in asn.text
    assert "Ketik pertanyaan Anda" in asn.text
    await asn.say(QUESTION)
    await asn.press("Ubah")
    await asn.say("Bagaimana cara membayar iuran?")
    assert "Bagaimana cara membayar iuran?" in asn.text
    await asn.press("Batal")
    assert "Pertanyaan tidak dikirim" in asn.text
    assert "Menu utama" in asn.question.text
    assert await tickets(office.sessionmaker) == []
    assert await office.outbox("ticket_new") == []


async def test_someone_who_is_neither_asn_nor_worker_is_told_who_can_ask(
    guest: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await guest.say("tanya")
    assert "Daftar dulu sebagai ASN" in guest.text
    assert any("Daftar sebagai ASN" in label for label in guest.labels())
    assert await tickets(sessionmaker) == []


async def test_a_question_from_an_opd_without_pic_goes_to_the_administrator(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await appoint_admin_account(sessionmaker, asn.clock)
    await asn.say("tanya")
    assert "Dinas Kesehatan belum punya PIC" in asn.text
    assert "administrator program" in asn.text
    await asn.say(QUESTION)
    await asn.press("Kirim")
    (ticket,) = await tickets(sessionmaker)
    assert f"#{ticket.id} terkirim ke administrator program" in asn.text

    admin = Chat(asn.engine, asn.clock, sender=ADMIN_ID)
    await admin.say("/start")
    assert "Menu administrator" in admin.labels()[-1]
    await admin.press("Menu administrator")
    assert "Dinas Kesehatan (BKL-DINKES): 0 pendaftaran menunggu, 1 pertanyaan terbuka" in (
        admin.text
    )
    await admin.press("Pertanyaan untuk OPD tanpa PIC (1)")
    await admin.press(f"#{ticket.id}")
    await admin.press("Jawab")
    await admin.say(ANSWER)
    await admin.press("Kirim dan tutup")
    assert "pertanyaan ditutup" in admin.text
    assert admin.labels()[0] == "🛡 Kembali ke menu administrator"

    async with sessionmaker() as session:
        answer = (
            (await session.execute(select(TicketMessage).order_by(TicketMessage.id.desc())))
            .scalars()
            .first()
        )
        notices = (await session.execute(select(AuditLog.actor_type, AuditLog.action))).all()
    assert answer is not None and answer.body == ANSWER
    assert ("admin", "ticket.answer") in [tuple(row) for row in notices]


async def test_a_pic_appointed_later_finds_the_open_question(
    asn: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await appoint_admin_account(sessionmaker, asn.clock)
    await ask(asn)
    await appoint_pic(sessionmaker, asn.clock, telegram_id=PIC_ID, opd_code="BKL-DINKES")
    pic = Chat(asn.engine, asn.clock, sender=PIC_ID)
    await pic.say("pic")
    assert "💬 Pertanyaan masuk (1)" in pic.labels()
    # The administrator's list holds questions of OPDs without a PIC only.
    admin = Chat(asn.engine, asn.clock, sender=ADMIN_ID)
    await admin.say("admin")
    await admin.press("Pertanyaan untuk OPD tanpa PIC")
    assert "Tidak ada pertanyaan terbuka" in admin.text


async def test_a_worker_asks_on_whatsapp_and_the_answer_comes_back_there(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await office.enroll()
    worker = Chat(
        office.engine,
        office.clock,
        sender=WORKER_WA_ID,
        channel=Channel.WHATSAPP,
        sender_phone="+" + WORKER_WA_ID,
    )
    await worker.say("YA")  # consents; the worker menu follows
    assert "Tanya PIC" in worker.labels()[-1]
    await worker.press("Tanya PIC")
    await worker.say("Apakah saya perlu datang ke kantor BPJS?")
    await worker.press("Kirim")
    assert "terkirim ke PIC Dinas Kesehatan" in worker.text
    assert "Status saya" in " ".join(worker.labels())  # back to the worker's own menu
    await worker.say("admin")  # not an administrator: told so, with their own menu
    assert "khusus untuk administrator" in worker.text
    assert "Status saya" in " ".join(worker.labels())
    (ticket,) = await tickets(sessionmaker)
    assert ticket.asker_role is AskerRole.WORKER
    assert ticket.worker_id is not None

    await office.pic.press_id(f"g:tk:{ticket.id}")
    assert "Siti Aminah (pekerja, Dinas Kesehatan)" in office.pic.text
    await office.pic.press("Jawab")
    await office.pic.say("Tidak perlu, kartu dibagikan lewat OPD.")
    await office.pic.press("Kirim dan tutup")
    (answer,) = await office.outbox("ticket_answer")
    assert (answer.channel, answer.recipient) == (Channel.WHATSAPP, WORKER_WA_ID)
    assert answer.template == "ticket_answer"
    assert answer.params["answer"] == "Tidak perlu, kartu dibagikan lewat OPD."


async def test_erasing_a_worker_erases_their_questions(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await office.enroll()
    worker = Chat(
        office.engine,
        office.clock,
        sender=WORKER_WA_ID,
        channel=Channel.WHATSAPP,
        sender_phone="+" + WORKER_WA_ID,
    )
    await worker.say("YA")
    await ask(worker, "Apakah Siti Aminah perlu datang ke kantor?")
    # The ASN's own question names the worker too.
    await ask(office.asn, "Kartu Siti Aminah sudah terbit?")
    await worker.say("HAPUS")
    await worker.press("Ya, hapus")
    remaining = await tickets(sessionmaker)
    assert [t.asker_role for t in remaining] == [AskerRole.ASN]
    async with sessionmaker() as session:
        bodies = [m.body for m in (await session.execute(select(TicketMessage))).scalars()]
    assert bodies == ["Kartu [dihapus] sudah terbit?"]


async def test_closed_questions_go_after_the_retention_period_open_ones_stay(
    office: Office,
) -> None:
    await ask(office.asn)
    await ask(office.asn, "Bagaimana cara membayar iuran?")
    first, second = await tickets(office.sessionmaker)
    await office.pic.press_id(f"g:tk:{first.id}")
    await office.pic.press("Tutup pertanyaan")
    office.clock.advance(timedelta(days=91))
    result = await apply_retention(
        office.sessionmaker, older_than=office.clock() - timedelta(days=90)
    )
    assert result.questions == 1
    assert [ticket.id for ticket in await tickets(office.sessionmaker)] == [second.id]
    async with office.sessionmaker() as session:
        left = (await session.execute(select(TicketMessage.ticket_id))).scalars().all()
    assert list(left) == [second.id]
