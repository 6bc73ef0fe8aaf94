"""Signing in to the web workbench, sessions, CSRF, roles and scope (issue 13)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.settings import WebSettings
from domain.vocabulary import SponsorshipStatus
from storage.audit import Actor
from storage.db import create_engine
from storage.models import AuditLog, Pic, WebSession, WebSignInAttempt, WebSignInLink
from tests.fakes.chat import Chat
from tests.fakes.web import (
    COOKIE_NAME,
    Browser,
    admin_link,
    appoint_leader_account,
    link_token,
    pic_signs_in,
    web_server,
)
from tests.fakes.workbench import build_office


async def test_the_bot_sends_a_link_that_works_once_and_is_stored_hashed(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.pic.say("/web")
    assert "10 menit" in office.pic.text
    token = link_token(office.pic.text)
    async with sessionmaker() as session:
        stored = (await session.execute(select(WebSignInLink.token_hash))).scalars().all()
    assert stored and token not in stored  # only the hash is kept
    async with web_server(office) as server, TestClient(server) as client:
        first = Browser(client)
        await first.sign_in(token)
        assert (await first.get("/web/queue")).status == 200
        assert "Dinas Kesehatan" in first.last
        again = Browser(client)
        await again.get("/web/signin", t=token)
        response = await again.post("/web/signin", {"t": token}, csrf=False)
        assert response.status == 403
        assert "sudah dipakai" in again.last


async def test_an_expired_or_unknown_link_opens_no_session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.pic.say("/web")
    token = link_token(office.pic.text)
    office.clock.advance(timedelta(minutes=10, seconds=1))
    async with web_server(office) as server, TestClient(server) as client:
        browser = Browser(client)
        response = await browser.post("/web/signin", {"t": token}, csrf=False)
        assert response.status == 403 and "kedaluwarsa" in browser.last
        response = await browser.post("/web/signin", {"t": token[:-2] + "xx"}, csrf=False)
        assert response.status == 403 and "tidak dikenal" in browser.last
        assert (await browser.get("/web/queue")).status == 401
    async with sessionmaker() as session:
        assert (await session.execute(select(WebSession.id))).first() is None


async def test_a_get_of_the_link_does_not_spend_it(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # Link previews (Telegram, mail scanners) fetch the URL: only the button signs in.
    office = await build_office(sessionmaker)
    await office.pic.say("/web")
    token = link_token(office.pic.text)
    async with web_server(office) as server, TestClient(server) as client:
        for _ in range(3):
            assert (await client.get("/web/signin", params={"t": token})).status == 200
        browser = Browser(client)
        await browser.sign_in(token)
        assert (await browser.get("/web/queue")).status == 200


async def test_somebody_without_a_role_gets_no_link(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.asn.say("/web")
    assert "hanya untuk PIC" in office.asn.text
    assert "/web/signin" not in office.asn.text


async def test_a_forged_session_cookie_is_signed_out(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    async with web_server(office) as server, TestClient(server) as client:
        client.session.cookie_jar.update_cookies({COOKIE_NAME: "forged-value"})
        response = await client.get("/web/queue")
        assert response.status == 401
        assert "Anda belum masuk" in await response.text()
        response = await client.post("/web/queue/accept", data={"id": "1", "csrf": "x"})
        assert response.status == 401


async def test_the_session_cookie_is_httponly_and_strict(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.pic.say("/web")
    async with web_server(office) as server, TestClient(server) as client:
        await client.get("/web/signin", params={"t": link_token(office.pic.text)})
        response = await client.post(
            "/web/signin", data={"t": link_token(office.pic.text)}, allow_redirects=False
        )
        assert response.status == 303
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/web" in cookie
        # Plain http here (WEB_BASE_URL unset): Secure only behind https.
        assert "Secure" not in cookie


async def test_a_post_without_the_csrf_token_changes_nothing(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll()
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        sid = str((await office.sponsorships())[0].id)
        response = await browser.post("/web/queue/accept", {"id": sid}, csrf=False)
        assert response.status == 403
        browser.csrf = "not-the-token"
        response = await browser.post("/web/queue/accept", {"id": sid})
        assert response.status == 403
    assert (await office.sponsorships())[0].status is SponsorshipStatus.WAITING_FOR_PIC


async def test_an_idle_session_ends(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    office = await build_office(sessionmaker)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        office.clock.advance(timedelta(minutes=29))
        assert (await browser.get("/web/queue")).status == 200
        office.clock.advance(timedelta(minutes=31))
        assert (await browser.get("/web/queue")).status == 401


async def test_a_removed_pic_is_signed_out_at_once(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        async with sessionmaker() as session, session.begin():
            await session.execute(update(Pic).values(removed_at=office.clock()))
        assert (await browser.get("/web/queue")).status == 401


async def test_sign_in_attempts_are_rate_limited(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    async with web_server(office) as server, TestClient(server) as client:
        statuses = [
            (await client.post("/web/signin", data={"t": f"guess{i}"})).status for i in range(12)
        ]
    assert statuses[:10] == [403] * 10
    assert statuses[10:] == [429, 429]


async def test_a_pic_asking_for_another_opds_records_gets_404_and_nothing_changes(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll()
    sid = str((await office.sponsorships())[0].id)
    async with web_server(office) as server, TestClient(server) as client:
        other = await pic_signs_in(office, office.other_pic, client)
        # The other OPD's PIC: their own queue is empty, and the id is not theirs.
        await other.get("/web/queue", opd=str(await office.opd_id()))
        assert "Siti Aminah" not in other.last
        assert (await other.post("/web/queue/accept", {"id": sid})).status == 404
        assert (await other.post("/web/queue/return", {"id": sid, "reason": "nik"})).status == 404
        assert (await other.post(f"/web/queue/{sid}/nik", {})).status == 404
        assert (await other.get("/web/batches/1/file")).status == 404
    assert (await office.sponsorships())[0].status is SponsorshipStatus.WAITING_FOR_PIC
    assert await office.outbox("accepted") == []


async def test_a_leader_reads_every_opd_and_any_post_is_refused(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll()
    await appoint_leader_account(office, "4001")
    leader = Chat(office.engine, office.clock, sender="4001")
    await leader.say("/web")
    sid = str((await office.sponsorships())[0].id)
    async with web_server(office) as server, TestClient(server) as client:
        browser = Browser(client)
        await browser.sign_in(link_token(leader.text))
        await browser.get("/web/queue", opd=str(await office.opd_id()))
        assert "Siti Aminah" in browser.last
        assert 'name="id"' not in browser.last  # no boxes to tick, no buttons
        for path, data in (
            ("/web/queue/accept", {"id": sid}),
            (f"/web/queue/{sid}/nik", {}),
            ("/web/batches/export", {"opd": str(await office.opd_id())}),
        ):
            assert (await browser.post(path, data)).status == 403
        file = await browser.get("/web/batches/1/file", opd=str(await office.opd_id()))
        assert file.status == 403
    assert (await office.sponsorships())[0].status is SponsorshipStatus.WAITING_FOR_PIC


async def test_an_administrator_link_from_the_command_line(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    token = await admin_link(office, "operator")
    async with web_server(office) as server, TestClient(server) as client:
        browser = Browser(client)
        await browser.sign_in(token)
        await browser.get("/web/queue")
        assert "Pilih OPD" in browser.last  # every OPD: choose one
        assert (await browser.get("/web/outbox")).status == 200
    async with sessionmaker() as session:
        actors = (
            await session.execute(select(AuditLog.actor_type, AuditLog.actor, AuditLog.action))
        ).all()
    assert (Actor.admin("operator").type, "operator", "web.link") in actors


async def test_the_language_can_be_switched_to_english(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        assert "Verifikasi" in browser.last
        await browser.post("/web/language", {"lang": "en", "back": "/web/queue"})
        await browser.get("/web/queue")
        assert "Verification" in browser.last and "Sign out" in browser.last


async def test_the_pic_menu_offers_the_web_link(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.pic.say("pic")
    await office.pic.press("Buka di web")
    assert "/web/signin?t=" in office.pic.text


async def _sign_in_status(client: TestClient[Any, Any], address: str) -> int:
    response = await client.post(
        "/web/signin", data={"t": "not-a-token"}, headers={"X-Forwarded-For": address}
    )
    return response.status


async def test_the_sign_in_limit_is_shared_by_two_processes_on_one_database(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """Two web servers, each with its own engine (as two `sertakan run` processes), behind
    one proxy: an address's attempts count together, other addresses are not held back,
    and a minute later the address may try again with the old attempts pruned."""
    office = await build_office(sessionmaker)
    settings = WebSettings(sign_in_per_minute=4)
    second_engine = create_engine(database_url)
    try:
        async with (
            web_server(office, settings=settings) as one,
            web_server(office, settings=settings, database=second_engine) as two,
            TestClient(one) as first,
            TestClient(two) as second,
        ):
            statuses = [
                await _sign_in_status(client, "203.0.113.7")
                for client in (first, second, first, second, first, second)
            ]
            # Unknown token (403) four times in all, then refused before it is looked at.
            assert statuses == [403, 403, 403, 403, 429, 429]
            assert await _sign_in_status(second, "203.0.113.8") == 403
            office.clock.advance(timedelta(seconds=61))
            assert await _sign_in_status(first, "203.0.113.7") == 403
        async with sessionmaker() as session:
            rows = (await session.execute(select(WebSignInAttempt.address_hash))).scalars().all()
        # The minute-old rows went; only the new attempt remains, and no address is kept.
        assert len(rows) == 1 and "203.0.113.7" not in rows[0]
    finally:
        await second_engine.dispose()


async def test_a_forwarded_address_counts_only_from_a_trusted_proxy(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A client speaking to the bot directly cannot dodge the limit by inventing a new
    X-Forwarded-For each time: only the proxy's header is believed."""
    office = await build_office(sessionmaker)
    settings = WebSettings(sign_in_per_minute=2, trusted_proxies="192.0.2.1")
    async with web_server(office, settings=settings) as server, TestClient(server) as client:
        statuses = [await _sign_in_status(client, f"198.51.100.{n}") for n in range(3)]
    assert statuses == [403, 403, 429]
    # Behind a proxy in a container network (a range): each client counts on its own.
    office.clock.advance(timedelta(seconds=61))
    proxied = WebSettings(sign_in_per_minute=2, trusted_proxies="10.0.0.0/8,127.0.0.0/8")
    async with web_server(office, settings=proxied) as server, TestClient(server) as client:
        statuses = [await _sign_in_status(client, f"198.51.100.{n}") for n in range(3)]
    assert statuses == [403, 403, 403]
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        WebSettings(trusted_proxies="127.0.0.1,nginx")
