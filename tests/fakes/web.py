"""The web workbench on an `Office` (tests.fakes.workbench), served by aiohttp's test server,
and a browser-less person using it: signs in with the link the bot sends, keeps the
session cookie, reads the CSRF token from the page like a browser's form does."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

from aiohttp import ClientResponse, FormData, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.settings import WebSettings
from bot.web.app import COOKIE, ReceiptSource, WebParts, add_web_routes
from domain.vocabulary import Channel
from domain.workdays import WorkCalendar
from handlers.i18n import Catalogs
from storage.audit import Actor
from storage.coverage import CoverageTargets
from storage.coverage_cache import CoverageCache
from storage.crypto import NikCipher
from storage.web_access import Principal, WebRole, appoint_leader, issue_link
from tests.fakes.chat import TEST_KEY, Chat
from tests.fakes.workbench import Office

COOKIE_NAME = COOKIE
LINK = re.compile(r"/web/signin\?t=([A-Za-z0-9_\-]+)")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def web_parts(
    office: Office,
    receipts: ReceiptSource | None = None,
    *,
    settings: WebSettings | None = None,
    database: AsyncEngine | None = None,
) -> WebParts:
    """The pages' parts on the office's database (or `database`: another engine on it,
    as a second process would have)."""
    return WebParts(
        database=database or office.sessionmaker.kw["bind"],
        engine=office.engine,
        catalogs=Catalogs(),
        cipher=NikCipher(TEST_KEY),
        clock=office.clock,
        settings=settings or WebSettings(),
        receipts=receipts or ReceiptSource(),
        # Read on every request (max_age 0): a test sees each change at once.
        coverage=CoverageCache(
            office.sessionmaker.kw["bind"],
            targets=CoverageTargets(overall=100, per_opd={"BKL-DINKES": 10}),
            calendar=WorkCalendar(()),
            zone=office.engine.config.timezone,
            clock=office.clock,
            max_age=timedelta(0),
        ),
    )


@contextlib.asynccontextmanager
async def web_server(
    office: Office,
    receipts: ReceiptSource | None = None,
    *,
    settings: WebSettings | None = None,
    database: AsyncEngine | None = None,
) -> AsyncIterator[TestServer]:
    app = web.Application()
    add_web_routes(app, web_parts(office, receipts, settings=settings, database=database))
    server = TestServer(app)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def link_token(text: str) -> str:
    found = LINK.search(text)
    assert found is not None, text
    return found.group(1)


class Browser:
    """One person's cookie jar on the web workbench."""

    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client
        self.csrf = ""
        self.last = ""

    async def get(self, path: str, **params: str) -> ClientResponse:
        response = await self.client.get(path, params=params)
        self.last = await response.text()
        found = CSRF.search(self.last)
        if found:
            self.csrf = found.group(1)
        return response

    async def post(
        self, path: str, data: Mapping[str, Any] | list[tuple[str, str]], *, csrf: bool = True
    ) -> ClientResponse:
        fields = list(data.items()) if isinstance(data, Mapping) else list(data)
        if csrf:
            fields.append(("csrf", self.csrf))
        response = await self.client.post(path, data=fields)
        self.last = await response.text()
        return response

    async def upload(self, path: str, name: str, content: bytes, **fields: str) -> ClientResponse:
        form = FormData()
        for key, value in fields.items():
            form.add_field(key, value)
        form.add_field("file", content, filename=name)
        response = await self.client.post(path, data=form, params={"csrf": self.csrf})
        self.last = await response.text()
        return response

    async def sign_in(self, token: str) -> ClientResponse:
        page = await self.get("/web/signin", t=token)
        assert page.status == 200
        response = await self.post("/web/signin", {"t": token}, csrf=False)
        await self.get("/web/queue")
        return response


async def pic_signs_in(office: Office, chat: Chat, client: TestClient[Any, Any]) -> Browser:
    """The PIC asks the bot for a link ("/web") and opens it."""
    await chat.say("/web")
    browser = Browser(client)
    await browser.sign_in(link_token(chat.text))
    return browser


async def admin_link(office: Office, login: str = "operator") -> str:
    async with office.sessionmaker.kw["bind"].begin() as connection:
        return await issue_link(
            connection,
            Principal(WebRole.ADMIN, admin_login=login),
            actor=Actor.admin(login),
            now=office.clock(),
        )


async def appoint_leader_account(office: Office, telegram_id: str) -> None:
    async with office.sessionmaker.kw["bind"].begin() as connection:
        await appoint_leader(
            connection,
            channel=Channel.TELEGRAM,
            external_id=telegram_id,
            actor=Actor.admin("test"),
            now=office.clock(),
        )
