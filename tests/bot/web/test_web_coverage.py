"""The coverage page on the web: scope, figures that follow the work, downloads (issue 13)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import openpyxl
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import Payment
from tests.fakes.chat import WORKER_NIK, Chat
from tests.fakes.web import Browser, appoint_leader_account, link_token, pic_signs_in, web_server
from tests.fakes.workbench import activate, build_office


def _tile(page: str, name: str) -> str:
    marker = f'id="tile-{name}">'
    return page.split(marker, 1)[1].split("<", 1)[0]


async def test_a_leader_sees_the_province_change_as_the_pic_works(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll_two()
    await appoint_leader_account(office, "4001")
    leader_chat = Chat(office.engine, office.clock, sender="4001")
    await leader_chat.say("/web")
    async with web_server(office) as server, TestClient(server) as client:
        leader = Browser(client)
        await leader.sign_in(link_token(leader_chat.text))
        await leader.get("/web/coverage")
        assert "Provinsi (semua OPD)" in leader.last
        assert _tile(leader.last, "waiting_for_pic") == "2"
        assert _tile(leader.last, "accepted") == "0"
        assert "<svg" in leader.last and 'role="img"' in leader.last
        assert "Dinas Kesehatan" in leader.last  # the OPD table
        # The PIC accepts both in the chat meanwhile.
        await office.pic.say("pic")
        await office.pic.press("Periksa pendaftaran")
        await office.pic.press("Terima")
        await office.pic.press("Terima")
        await leader.get("/web/coverage")
        assert _tile(leader.last, "waiting_for_pic") == "0"
        assert _tile(leader.last, "accepted") == "2"
        await leader.get("/web/coverage", sort="workers", desc="1")
        table = leader.last.split('id="opds"', 1)[1]
        assert table.index("Dinas Kesehatan") < table.index("Dinas Pendidikan")
        csv = await client.get("/web/coverage.csv")
        assert csv.status == 200 and "Dinas Kesehatan" in await csv.text()
        xlsx = await client.get("/web/coverage.xlsx", params={"opd": str(await office.opd_id())})
        sheet = openpyxl.load_workbook(io.BytesIO(await xlsx.read())).active
        assert sheet is not None
        assert "Dinas Kesehatan" in {str(c.value) for row in sheet.iter_rows() for c in row}


async def test_a_pic_sees_their_own_opd_only(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll_two()
    async with web_server(office) as server, TestClient(server) as client:
        other = await pic_signs_in(office, office.other_pic, client)
        await other.get("/web/coverage", opd=str(await office.opd_id()))
        assert _tile(other.last, "waiting_for_pic") == "0"  # their own OPD, whatever was asked
        assert "Provinsi" not in other.last.split("<h1>", 1)[1].split("</h1>", 1)[0]


async def test_a_payment_confirmed_on_the_web_or_in_the_chat_moves_the_paid_up_share(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # The page reads its figures afresh (max_age 0): the paid-until it counts is the one
    # `storage.payments` settles in the transaction that confirms.
    office = await build_office(sessionmaker)
    await activate(office, (WORKER_NIK, "Siti Aminah"))  # covered from December 2026
    office.clock.now = datetime(2026, 12, 20, 3, 0, tzinfo=UTC)  # December overdue
    async with web_server(office) as server, TestClient(server) as client:
        pic = await pic_signs_in(office, office.pic, client)
        await pic.get("/web/coverage")
        assert _tile(pic.last, "paid-up") == "0%"

        await office.record_payment()  # December, rejected on the web: still overdue
        payment_id = await _newest_payment(office.sessionmaker)
        form = {"reason": "other", "reason_text": "Transfer belum masuk"}
        assert (await pic.post(f"/web/payments/{payment_id}/reject", form)).status == 200
        await pic.get("/web/coverage")
        assert _tile(pic.last, "paid-up") == "0%"

        await office.record_payment()  # December again, confirmed on the web
        payment_id = await _newest_payment(office.sessionmaker)
        assert (await pic.post(f"/web/payments/{payment_id}/confirm", {})).status == 200
        await pic.get("/web/coverage")
        assert _tile(pic.last, "paid-up") == "100%"

        office.clock.now = datetime(2027, 1, 20, 3, 0, tzinfo=UTC)  # January overdue
        pic = await pic_signs_in(office, office.pic, client)  # a month on: signed in anew
        await pic.get("/web/coverage")
        assert _tile(pic.last, "paid-up") == "0%"
        await office.record_payment()  # January, confirmed in the chat
        await office.pic.say("pic")
        await office.pic.press("Konfirmasi pembayaran (1)")
        await office.pic.press("Konfirmasi")
        assert "Pembayaran dikonfirmasi" in office.pic.text
        await pic.get("/web/coverage")
        assert _tile(pic.last, "paid-up") == "100%"


async def _newest_payment(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        newest = await session.scalar(select(func.max(Payment.id)))
    assert newest is not None
    return int(newest)
