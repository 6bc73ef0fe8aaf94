"""The audit log and, for administrators, the outbox on the web (issue 13)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import OutboxStatus
from storage.models import AuditLog, Outbox
from tests.fakes.web import Browser, admin_link, pic_signs_in, web_server
from tests.fakes.workbench import build_office


async def test_the_audit_log_filters_and_a_pic_sees_their_opd_only(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll_two()
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        first, second = await office.sponsorships()
        await browser.post("/web/queue/accept", {"id": str(first.id)})
        await browser.post("/web/queue/return", {"id": str(second.id), "reason": "nik"})
        await browser.get("/web/audit", action="enrollment.")
        assert "enrollment.accept" in browser.last and "enrollment.return" in browser.last
        await browser.get("/web/audit", record=f"sponsorship:{second.id}")
        assert "enrollment.return" in browser.last and "enrollment.accept" not in browser.last
        await browser.get("/web/audit", **{"from": "2030-01-01"})
        assert "enrollment.accept" not in browser.last
        other = await pic_signs_in(office, office.other_pic, client)
        await other.get("/web/audit")
        assert "enrollment.accept" not in other.last  # another OPD's entries
        assert (await other.get("/web/outbox")).status == 403


async def test_an_administrator_sees_the_outbox_and_retries_a_failed_notice(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll()
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    await office.pic.press("Terima")  # the ASN's notice goes into the outbox
    async with sessionmaker() as session, session.begin():
        first_id = (await session.execute(select(Outbox.id).order_by(Outbox.id))).scalars().first()
        assert first_id is not None
        await session.execute(
            update(Outbox)
            .where(Outbox.id == first_id)
            .values(status=OutboxStatus.FAILED, last_error="403 bot was blocked by the user")
        )
    async with web_server(office) as server, TestClient(server) as client:
        browser = Browser(client)
        await browser.sign_in(await admin_link(office))
        await browser.get("/web/outbox")
        assert "403 bot was blocked by the user" in browser.last
        assert (await browser.post(f"/web/outbox/{first_id}/retry", {})).status == 200
        assert (await browser.post(f"/web/outbox/{first_id}/retry", {})).status == 404
    async with sessionmaker() as session:
        status = await session.scalar(select(Outbox.status).where(Outbox.id == first_id))
        actions = (await session.execute(select(AuditLog.action))).scalars().all()
    assert status is OutboxStatus.PENDING
    assert "outbox.retry" in actions


async def test_the_audit_pager_names_its_page_so_it_works_from_any_address(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The pager's links carry the page's own path, not only a query: followed from a page
    shown after a POST (the action's address, without htmx) they still GET the audit log."""
    office = await build_office(sessionmaker)
    opd_id = await office.opd_id()
    async with sessionmaker() as session, session.begin():
        session.add_all(
            AuditLog(
                at=office.clock(),
                actor_type="pic",
                actor="1",
                action=f"test.entry{n}",
                record_type="sponsorship",
                record_id=str(n),
                opd_id=opd_id,
                details={},
            )
            for n in range(60)
        )
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        await browser.get("/web/audit", action="test.")
        assert 'rel="next" href="/web/audit?action=test.&amp;page=2"' in browser.last
        await browser.get("/web/audit", action="test.", page="2")
        assert browser.last.count("test.entry") == 10
