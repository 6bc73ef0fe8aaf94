"""The WhatsApp client's HTTP transport (httpx-aiohttp's, bot/whatsapp/client.py) raises httpx's
errors as httpx's own transport names them, so the sender's split (errors.py) and its logged
reasons hold: nothing reached for a refused connection, a read for a dropped one, a timeout
only for a timeout."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.settings import WhatsAppSettings
from bot.whatsapp.client import AiohttpTransport, build_client
from bot.whatsapp.errors import classify_error, is_transient_update
from scheduler.sending import Transient


async def _hang_up(request: web.Request) -> web.StreamResponse:
    """Reads the request, then closes the connection without a word."""
    await request.read()
    assert request.transport is not None
    request.transport.close()
    await asyncio.sleep(0.5)
    return web.Response()


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1.0)
    return web.json_response({"ok": True})


async def _cut(request: web.Request) -> web.StreamResponse:
    """Promises 1,000 bytes, sends 10, closes."""
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    await response.prepare(request)
    await response.write(b"x" * 10)
    assert request.transport is not None
    request.transport.close()
    return response


async def _fine(request: web.Request) -> web.Response:
    return web.json_response({"echo": (await request.read()).decode()})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hang-up", _hang_up)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/cut", _cut)
    app.router.add_post("/fine", _fine)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=AiohttpTransport(), timeout=httpx.Timeout(5.0, read=0.2))
    yield client
    await client.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _judged(error: Exception) -> Transient:
    result = classify_error(error, rate_limit_pause_s=60, pair_retry_s=6)
    assert isinstance(result, Transient)
    assert is_transient_update(error)
    return result


async def test_a_request_and_its_answer_go_through(server: str, http: httpx.AsyncClient) -> None:
    response = await http.post(f"{server}/fine", content=b"halo")
    assert response.json() == {"echo": "halo"}


async def test_a_refused_connection_is_a_connect_error_not_a_timeout(
    http: httpx.AsyncClient,
) -> None:
    with pytest.raises(httpx.ConnectError) as raised:
        await http.get(f"http://127.0.0.1:{_closed_port()}/")
    assert _judged(raised.value) == Transient("ConnectError")


async def test_a_connection_dropped_after_the_request_is_a_read_error(
    server: str, http: httpx.AsyncClient
) -> None:
    with pytest.raises(httpx.ReadError) as raised:
        await http.post(f"{server}/hang-up", content=b"halo")
    assert _judged(raised.value) == Transient("ReadError")


async def test_an_answer_slower_than_the_read_timeout_is_a_read_timeout(
    server: str, http: httpx.AsyncClient
) -> None:
    with pytest.raises(httpx.ReadTimeout) as raised:
        await http.get(f"{server}/slow")
    assert _judged(raised.value) == Transient("timeout")


async def test_a_body_cut_short_is_a_read_error(server: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadError) as raised:
        await http.get(f"{server}/cut")
    assert _judged(raised.value) == Transient("ReadError")


async def test_a_failed_send_logs_no_advice_from_pywa_to_bring_our_own_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pywa logs "provide your own httpx.Client" before re-raising each connection error;
    we do, so during an outage that line would only mislead whoever reads the log."""
    settings = WhatsAppSettings(
        phone_number_id="1234",
        access_token=SecretStr("token"),
        api_base=f"http://127.0.0.1:{_closed_port()}",
    )
    client = build_client(settings)
    caplog.set_level(logging.DEBUG, logger="pywa")
    try:
        with pytest.raises(httpx.ConnectError):
            await client.wa.send_message(to="6281234567890", text="halo")
    finally:
        await client.close()
    pywa_records = [r for r in caplog.records if r.name.startswith("pywa")]
    assert pywa_records, "pywa logged nothing: the filter's logger name is no longer its own"
    assert not [r for r in pywa_records if "provide your own" in r.getMessage()]
