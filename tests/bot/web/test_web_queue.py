"""The verification queue on the web: the chat's rules, notices and scope (issue 13)."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.web import pages
from domain.vocabulary import ReturnReason, SponsorshipStatus
from storage import web_queries, workbench
from storage.models import AuditLog, Pic
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.web import Browser, admin_link, pic_signs_in, web_server
from tests.fakes.workbench import Office, build_office


async def test_a_pic_accepts_two_in_bulk_and_the_asn_is_told(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll_two()
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        page = await browser.get("/web/queue")
        assert page.status == 200
        assert "Siti Aminah" in browser.last and "Joko Susilo" in browser.last
        assert WORKER_NIK not in browser.last and OTHER_NIK not in browser.last
        ids = [str(s.id) for s in await office.sponsorships()]
        response = await browser.post("/web/queue/accept", [("id", i) for i in ids])
        assert response.status == 200
        # The address bar shows the queue, not the action: a reload or a filter GETs the page.
        assert response.headers["HX-Push-Url"] == "/web/queue"
        assert 'action="/web/queue" class="filters"' in browser.last
    assert [s.status for s in await office.sponsorships()] == [SponsorshipStatus.ACCEPTED] * 2
    assert len(await office.outbox("accepted")) == 2
    async with sessionmaker() as session:
        actions = (await session.execute(select(AuditLog.action))).scalars().all()
    assert actions.count("enrollment.accept") == 2
    assert "web.link" in actions and "web.sign_in" in actions


async def test_a_bulk_accept_refuses_the_one_without_consent_and_accepts_the_other(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """One transaction per enrollment, as in the chat: the refusal is said by name and does
    not undo the accept beside it (PROGRAM_ACCEPT_WITHOUT_CONSENT is false by default)."""
    office = await build_office(sessionmaker)
    await office.enroll(WORKER_NIK, "Siti Aminah", consent=True)
    await office.enroll(OTHER_NIK, "Joko Susilo", consent=False)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        ids = [str(s.id) for s in await office.sponsorships()]
        response = await browser.post("/web/queue/accept", [("id", i) for i in ids])
        assert response.status == 200
        refusal = "Joko Susilo: Pendaftaran ini belum bisa diterima: pekerja belum memberi"
        assert refusal in browser.last
    statuses = {s.id: s.status for s in await office.sponsorships()}
    assert sorted(statuses.values()) == sorted(
        [SponsorshipStatus.ACCEPTED, SponsorshipStatus.WAITING_FOR_PIC]
    )
    assert len(await office.outbox("accepted")) == 1


async def test_an_administrator_reads_the_queue_but_cannot_decide_as_in_the_chat(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The chat lets only the OPD's PIC accept or return (Guard.PIC; the decision records the
    PIC's id): the web mirrors it for an administrator, says so, and nothing changes."""
    office = await build_office(sessionmaker)
    await office.enroll_two()
    opd = str(await office.opd_id())
    async with web_server(office) as server, TestClient(server) as client:
        browser = Browser(client)
        await browser.sign_in(await admin_link(office))
        page = await browser.get("/web/queue", opd=opd)
        assert page.status == 200 and "Siti Aminah" in browser.last
        assert 'id="pic-decides"' in browser.last and "tugas PIC OPD ini" in browser.last
        assert 'name="id"' not in browser.last and "/queue/accept" not in browser.last
        ids = [str(s.id) for s in await office.sponsorships()]
        accept = await browser.post("/web/queue/accept", [("opd", opd), *(("id", i) for i in ids)])
        assert accept.status == 403 and "Hanya PIC OPD ini" in browser.last
        give_back = await browser.post(
            "/web/queue/return", [("opd", opd), ("id", ids[0]), ("reason", "nik")]
        )
        assert give_back.status == 403
    statuses = [s.status for s in await office.sponsorships()]
    assert statuses == [SponsorshipStatus.WAITING_FOR_PIC] * 2
    assert await office.outbox("accepted") == [] and await office.outbox("returned") == []
    async with sessionmaker() as session:
        actions = (await session.execute(select(AuditLog.action))).scalars().all()
    assert "enrollment.accept" not in actions and "enrollment.return" not in actions


FIVE = [
    (f"320101010180{n:04d}", name)
    for n, name in enumerate(
        ["Ani Lestari", "Bayu Pratama", "Citra Dewi", "Dedi Kurnia", "Eka Putri"], start=1
    )
]


async def _five_waiting(office: Office) -> list[int]:
    for nik, name in FIVE:
        await office.enroll(nik, name, consent=True)
    return [s.id for s in await office.sponsorships()]


async def test_queue_pages_follow_the_keyset_and_skip_nothing_when_others_decide(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Five waiting, two a page. While the PIC reads page one, the first and the third are
    decided elsewhere: page two still starts right after the second (OFFSET 2 would have
    skipped the fourth), and going back from there gives a full first page."""
    office = await build_office(sessionmaker)
    ids = await _five_waiting(office)
    opd = await office.opd_id()
    async with sessionmaker() as session, session.begin():
        connection = await session.connection()
        first = await web_queries.queue_page(
            connection, opd_id=opd, where=web_queries.QueueFilter(), limit=2
        )
    assert [i.id for i in first.items] == ids[:2] and first.before is None
    assert first.after is not None and first.total == 5
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Terima")  # the oldest: Ani Lestari
    async with sessionmaker() as session, session.begin():
        connection = await session.connection()
        pic_id = await connection.scalar(select(Pic.id).where(Pic.opd_id == opd))
        await workbench.return_enrollment(
            connection,
            office.engine.notices,
            opd_id=opd,
            sponsorship_id=ids[2],
            pic_id=int(pic_id or 0),
            reason_code=ReturnReason.NAME,
            reason_text="Nama",
            now=office.clock(),
        )
        second = await web_queries.queue_page(
            connection, opd_id=opd, where=web_queries.QueueFilter(), limit=2, after=first.after
        )
        assert [i.id for i in second.items] == ids[3:5]
        assert second.total == 3 and second.after is None and second.before is not None
        back = await web_queries.queue_page(
            connection, opd_id=opd, where=web_queries.QueueFilter(), limit=2, before=second.before
        )
    assert [i.id for i in back.items] == [ids[1], ids[3]] and back.before is None


async def test_the_queue_page_links_to_the_next_and_previous_pages(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    office = await build_office(sessionmaker)
    await _five_waiting(office)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        await browser.get("/web/queue")
        assert "Ani Lestari" in browser.last and "Citra Dewi" not in browser.last
        assert 'rel="prev"' not in browser.last
        cursor = re.search(r'rel="next" href="/web/queue\?after=([0-9.]+)"', browser.last)
        assert cursor is not None
        await browser.get("/web/queue", after=cursor.group(1))
        assert "Citra Dewi" in browser.last and "Dedi Kurnia" in browser.last
        assert "Ani Lestari" not in browser.last
        back = re.search(r'rel="prev" href="/web/queue\?before=([0-9.]+)"', browser.last)
        assert back is not None
        await browser.get("/web/queue", before=back.group(1))
        assert "Ani Lestari" in browser.last and "Bayu Pratama" in browser.last
        # A cursor that is not one shows the first page, not an error.
        assert (await browser.get("/web/queue", after="9" * 60)).status == 200
        assert (await browser.get("/web/queue", after="x.y")).status == 200
        assert (await browser.get("/web/queue", before="1." + "9" * 20)).status == 200
        assert "Ani Lestari" in browser.last
