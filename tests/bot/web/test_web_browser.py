"""The web workbench in a real headless browser (Debian's chromium, driven by Selenium),
against the bot as `sertakan run` wires it: the fake Bot API, the Telegram adapter, the
engine, the database, the outbox and its dispatcher (issue 13).

A PIC asks the bot for a link over Telegram, signs in, accepts two enrollments in bulk,
returns one, exports and downloads the batch file, marks it sent, uploads the KPJ file
and applies it; the ASN receives every notice over the fake Bot API. A program leader
signs in the same way and sees the coverage numbers change. A screenshot of each page
is written under `test-artifacts/web/` (not committed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from bot.settings import DispatcherSettings, Settings
from bot.telegram import TelegramSender
from bot.web.app import add_web_routes, web_parts
from domain.vocabulary import Channel, OutboxStatus, SponsorshipStatus
from domain.workdays import WorkCalendar
from scheduler.dispatcher import Dispatcher
from storage.audit import Actor
from storage.coverage import CoverageTargets
from storage.coverage_cache import CoverageCache
from storage.models import AuditLog, Outbox, Sponsorship
from storage.web_access import appoint_leader
from tests.bot.test_telegram_e2e import open_bot, polling, register
from tests.bot.test_telegram_pic_e2e import ASN_ID, PIC_ID, enroll, settings_with_a_pic
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.clock import FrozenClock
from tests.fakes.telegram_api import FakeTelegramServer
from tests.fakes.telegram_user import TelegramUser
from tests.fakes.web import link_token, web_server
from tests.fakes.workbench import build_office

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)

THIRD_NIK = "3201011505850002"  # man born 15 May 1985
LEADER_ID = 8001
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "web"
LINK = re.compile(r"/web/signin\?t=([A-Za-z0-9_\-]+)")


class Page:
    """One headless Chromium; every call runs in a thread (Selenium blocks, and the
    server under test runs on this event loop)."""

    def __init__(self, base_url: str, downloads: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        assert CHROMIUM is not None and CHROMEDRIVER is not None
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,1000",
        ):
            options.add_argument(argument)
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
            },
        )
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.base_url = base_url

    async def run(self, work: Callable[[Any], Any]) -> Any:
        return await asyncio.to_thread(work, self.driver)

    async def open(self, path: str) -> None:
        await self.run(lambda d: d.get(self.base_url + path))

    async def click(self, css: str) -> None:
        await self.run(lambda d: d.find_element("css selector", css).click())

    async def text(self) -> str:
        # A script, not an element: htmx may swap the body between finding it and reading it.
        return str(await self.run(lambda d: d.execute_script("return document.body.innerText")))

    async def wait_for(self, words: str) -> None:
        """Until `words` show on the page (htmx swaps it after a click), at most 15 s."""
        try:
            async with asyncio.timeout(15):
                while True:
                    if words in await self.text():
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"{words!r} not on the page: {await self.text()}") from None

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.run(lambda d: d.save_screenshot(str(ARTIFACTS / f"{name}.png")))

    async def sign_in(self, token: str) -> None:
        await self.open(f"/web/signin?t={token}")
        await self.shot("00-sign-in")
        await self.click("#signin")

    async def sign_out(self) -> None:
        await self.click("form[action$='/signout'] button")
        await self.wait_for("Anda telah keluar")

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
async def settings(
    tmp_path: Path,
    database_url: str,
    server: FakeTelegramServer,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
) -> Settings:
    async def leader(connection: AsyncConnection) -> tuple[int, bool]:
        return await appoint_leader(
            connection,
            channel=Channel.TELEGRAM,
            external_id=str(LEADER_ID),
            actor=Actor.admin("test"),
            now=FrozenClock()(),
        )

    return await settings_with_a_pic(tmp_path, database_url, server, also=leader)


async def link_from_bot(user: TelegramUser) -> str:
    await user.say("/web")
    found = LINK.search(user.text)
    assert found is not None, user.text
    return found.group(1)


def _tile(text: str, label: str) -> int:
    """The number above `label` on the coverage page's tiles, as the browser shows it."""
    lines = text.splitlines()
    index = lines.index(label)
    return int(lines[index - 1].replace(".", ""))


async def test_a_pic_works_the_queue_in_a_browser_and_the_asn_is_told_over_telegram(
    settings: Settings,
    server: FakeTelegramServer,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    clock = FrozenClock()  # Saturday 10:00 in Jakarta: outside quiet hours
    asn = TelegramUser(server, ASN_ID)
    pic = TelegramUser(server, PIC_ID)
    leader = TelegramUser(server, LEADER_ID)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        await register(asn)
        await enroll(asn, WORKER_NIK, "Siti Aminah")
        await enroll(asn, OTHER_NIK, "Joko Susilo")
        await enroll(asn, THIRD_NIK, "Rudi Hartono")

        app = web.Application()
        parts = dataclasses.replace(
            web_parts(bot.runtime),
            # Figures read on every request: the leader sees each change at once.
            coverage=CoverageCache(
                bot.runtime.db,
                targets=CoverageTargets(overall=10),
                calendar=WorkCalendar(()),
                zone=bot.runtime.timezone,
                clock=clock,
                max_age=timedelta(0),
            ),
        )
        add_web_routes(app, parts)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        page = await asyncio.to_thread(Page, f"http://127.0.0.1:{port}", downloads)
        try:
            # The leader first: three waiting, nothing accepted.
            await page.sign_in(await link_from_bot(leader))
            await page.wait_for("Provinsi (semua OPD)")
            before = await page.text()
            assert _tile(before, "menunggu pemeriksaan PIC") == 3
            await page.shot("01-coverage-before")
            await page.sign_out()

            # The PIC: the link the bot sent over Telegram.
            await page.sign_in(await link_from_bot(pic))
            await page.wait_for("Menunggu verifikasi")
            await page.shot("02-queue")
            rows = await office_ids(sessionmaker)
            await page.click(f"input[name=id][value='{rows['Siti Aminah']}']")
            await page.click(f"input[name=id][value='{rows['Joko Susilo']}']")
            await page.click("#accept")
            await page.wait_for("Joko Susilo diterima")
            await page.shot("03-queue-accepted")
            await page.click(f"input[name=id][value='{rows['Rudi Hartono']}']")
            await page.click("#return")
            await page.wait_for("Dikembalikan ke ASN")
            await page.shot("04-queue-returned")

            await page.open("/web/batches")
            await page.click("#export")
            await page.wait_for("BKL-DINKES-2026-001")
            await page.shot("05-batches")
            await page.click("a[href*='/file']")
            await wait_for_file(downloads / "BKL-DINKES-2026-001.xlsx")
            await page.click("button.mark-sent")
            await page.wait_for("tercatat dikirim ke BPJS")
            kpj = tmp_path / "kpj_dari_bpjs.csv"
            kpj.write_text(f"NIK,KPJ\n{WORKER_NIK},12345678901\n{OTHER_NIK},12345678902\n")
            await page.run(lambda d: d.find_element("id", "kpj-file").send_keys(str(kpj)))
            await page.click("#upload")
            await page.wait_for("Cocok, siap diterapkan: 2")
            await page.shot("06-import-preview")
            await page.click("#apply")
            await page.wait_for("2 pendaftaran kini aktif")
            await page.open("/web/cards")
            await page.wait_for("12345678901")
            await page.shot("07-cards")
            await page.open("/web/payments")
            await page.shot("08-payments")
            await page.open("/web/audit")
            await page.wait_for("import.apply")
            await page.shot("09-audit")
            await page.sign_out()

            # The leader again: the numbers moved.
            await page.sign_in(await link_from_bot(leader))
            await page.wait_for("Provinsi (semua OPD)")
            after = await page.text()
            assert _tile(after, "menunggu pemeriksaan PIC") == 0
            assert _tile(after, "Kartu aktif") == 2
            await page.shot("10-coverage-after")
        finally:
            await asyncio.to_thread(page.close)
            await runner.cleanup()

        # The outbox as `sertakan run` sends it: the ASN hears of every step.
        started, frozen_at = time.monotonic(), clock()

        def running_clock() -> datetime:
            return frozen_at + timedelta(seconds=time.monotonic() - started)

        dispatcher = Dispatcher(
            bot.runtime.db,
            {Channel.TELEGRAM: TelegramSender(bot.channel.bot)},
            running_clock,
            DispatcherSettings(tick_interval_s=0.1, idle_s=0.05),
            ZoneInfo("Asia/Jakarta"),
        )
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        await asyncio.wait_for(all_sent(sessionmaker), 30)
        stop.set()
        await asyncio.wait_for(running, 10)

    told = [m.text for m in server.messages_to(ASN_ID)]
    assert sum("diterima oleh PIC" in text for text in told) == 2
    assert sum("Rudi Hartono" in text and "dikembalikan" in text for text in told) == 1
    assert sum("Nomor KPJ:" in text for text in told) == 2
    async with sessionmaker() as session:
        statuses = dict(
            (await session.execute(select(Sponsorship.id, Sponsorship.status))).tuples().all()
        )
        download = (
            await session.execute(
                select(AuditLog.details).where(AuditLog.action == "batch.download")
            )
        ).scalar_one()
    assert sorted(statuses.values()) == sorted(
        [SponsorshipStatus.ACTIVE, SponsorshipStatus.ACTIVE, SponsorshipStatus.RETURNED]
    )
    assert download["channel"] == "web"


async def office_ids(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    from storage.models import Worker

    async with sessionmaker() as session:
        rows = await session.execute(
            select(Worker.full_name, Sponsorship.id).join(
                Sponsorship, Sponsorship.worker_id == Worker.id
            )
        )
        return {str(name): int(sid) for name, sid in rows}


def _downloaded(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


async def wait_for_file(path: Path) -> None:
    """Until Chromium has saved the download (at most 15 s); it must be an XLSX (a zip)."""
    async with asyncio.timeout(15):
        while True:
            content = await asyncio.to_thread(_downloaded, path)
            if content:
                break
            await asyncio.sleep(0.1)
    assert content[:2] == b"PK"


async def all_sent(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    while True:
        async with sessionmaker() as session:
            statuses = set((await session.execute(select(Outbox.status))).scalars().all())
        if statuses == {OutboxStatus.SENT}:
            return
        await asyncio.sleep(0.1)


async def _keys(page: Page, *keys: str) -> None:
    """Type `keys` where the focus is, as a person at the keyboard does."""
    from selenium.webdriver.common.action_chains import ActionChains

    def press(driver: Any) -> None:
        chain = ActionChains(driver)
        for key in keys:
            chain.send_keys(key)
        chain.perform()

    await page.run(press)


async def _focused(page: Page) -> str:
    """The focused element: its id, else its row's id."""
    script = "var e = document.activeElement; return e.id || (e.closest('tr') || {}).id || '';"
    return str(await page.run(lambda d: d.execute_script(script)))


async def test_the_queue_s_keyboard_shortcuts_accept_one_and_return_one(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """j/k move between rows, x ticks, a accepts, r goes to the return reason (then Tab to
    the button and Enter), / goes to the search box: a PIC works the queue without the
    mouse, and the decisions are the chat's (audited, the ASN told)."""
    from selenium.webdriver.common.keys import Keys

    office = await build_office(sessionmaker)
    await office.enroll(WORKER_NIK, "Siti Aminah", consent=True)
    await office.enroll(OTHER_NIK, "Joko Susilo", consent=True)
    await office.enroll(THIRD_NIK, "Rudi Hartono", consent=True)
    rows = await office_ids(sessionmaker)
    await office.pic.say("/web")
    token = link_token(office.pic.text)
    async with web_server(office) as server:
        base = str(server.make_url("")).rstrip("/")
        page = await asyncio.to_thread(Page, base, tmp_path)
        try:
            await page.sign_in(token)
            await page.wait_for("Rudi Hartono")
            await _keys(page, "j", "j", "k")
            assert await _focused(page) == f"row-{rows['Siti Aminah']}"
            await _keys(page, "x", "a")
            await page.wait_for("Siti Aminah diterima")
            await page.shot("11-queue-keyboard-accepted")
            await _keys(page, "j")
            assert await _focused(page) == f"row-{rows['Joko Susilo']}"
            await _keys(page, "x", "r")
            assert await _focused(page) == "reason"
            await _keys(page, Keys.TAB, Keys.TAB)
            assert await _focused(page) == "return"
            await _keys(page, Keys.ENTER)
            await page.wait_for("Dikembalikan ke ASN")
            await page.shot("12-queue-keyboard-returned")
            await _keys(page, "/")
            assert await _focused(page) == "search"
            # After the return the address bar shows the queue (not the POST's address),
            # so the search GETs the queue.
            await _keys(page, "nobody", Keys.ENTER)
            await page.wait_for("Tidak ada pendaftaran yang menunggu")
            assert "Rudi Hartono" not in await page.text()
        finally:
            await asyncio.to_thread(page.close)
    statuses = {s.id: s.status for s in await office.sponsorships()}
    assert statuses == {
        rows["Siti Aminah"]: SponsorshipStatus.ACCEPTED,
        rows["Joko Susilo"]: SponsorshipStatus.RETURNED,
        rows["Rudi Hartono"]: SponsorshipStatus.WAITING_FOR_PIC,
    }
    assert len(await office.outbox("accepted")) == 1
    assert len(await office.outbox("returned")) == 1
