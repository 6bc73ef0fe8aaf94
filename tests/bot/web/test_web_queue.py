"""The verification queue on the web: the chat's rules, notices and scope (issue 13)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import SponsorshipStatus
from storage.models import AuditLog
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.web import Browser, admin_link, pic_signs_in, web_server
from tests.fakes.workbench import build_office


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
