"""The web server's access log: Meta's verify token (a query parameter) never reaches it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.access_log import app_runner
from bot.whatsapp.webhook import WhatsAppWebhook
from tests.bot.test_whatsapp_webhook import CIPHER, PATH, settings
from tests.fakes.clock import FrozenClock
from tests.fakes.whatsapp_payloads import VERIFY_TOKEN


async def _verify_through(
    make_runner: Callable[[web.Application], web.AppRunner], database: AsyncEngine
) -> None:
    """Serve the webhook on 127.0.0.1 with `make_runner` and pass Meta's handshake once."""
    app = web.Application()
    WhatsAppWebhook(settings(), database, CIPHER, FrozenClock()).routes(app)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "4711"}
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}{PATH}", params=params) as response,
        ):
            assert response.status == 200
    finally:
        await runner.cleanup()


async def test_the_verify_handshake_leaves_no_token_in_the_access_log(
    db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        await _verify_through(app_runner, db_engine)
    [line] = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert f'"GET {PATH} HTTP/1.1" 200' in line
    assert VERIFY_TOKEN not in caplog.text
    assert "hub." not in caplog.text


async def test_aiohttps_default_access_log_would_show_the_token(
    db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Why `app_runner` exists (and proof that the capture above sees the access log)."""
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        await _verify_through(web.AppRunner, db_engine)
    assert VERIFY_TOKEN in caplog.text
