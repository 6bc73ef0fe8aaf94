"""`sertakan run` as a real process: the composition root wired to Telegram.

The bot is started with `python -m bot run` and environment variables only, as
an operator would, against the fake Bot API on 127.0.0.1 and the test database,
and stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.crypto import generate_key
from tests.fakes.telegram_api import FakeTelegramServer

CHAT = 4242


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


def _environment(tmp_path: Path, database_url: str, server: FakeTelegramServer) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SERTAKAN_", "DATABASE_", "TELEGRAM_", "PROGRAM_", "WEB_"))
    }
    env.update(
        SERTAKAN_ENV="production",
        SERTAKAN_NIK_KEY=generate_key(),
        SERTAKAN_DATA_DIR=str(tmp_path),
        DATABASE_URL=database_url,
        TELEGRAM_TOKEN=server.token,
        TELEGRAM_API_BASE=server.base_url,
        TELEGRAM_POLLING_TIMEOUT_S="1",
    )
    return env


async def _run(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        env=env,
        # Outside the repository, so no .env file there can leak in.
        cwd=env["SERTAKAN_DATA_DIR"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _stop(process: asyncio.subprocess.Process) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_run_with_a_token_polls_telegram_and_stops_cleanly(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine, server: FakeTelegramServer
) -> None:
    process = await _run(_environment(tmp_path, database_url, server))
    try:
        update = server.push_update(server.text_update(CHAT, "/start"))
        sent = await server.wait_for_messages(CHAT, 2, timeout=60)
    finally:
        code, output = await _stop(process)
    assert sent[0].text.startswith("Selamat datang di SERTAKAN")
    assert sent[1].text.startswith("Menu utama")
    assert server.calls_of("deleteWebhook") and server.calls_of("setMyCommands")
    assert server.confirmed_offset > update["update_id"]
    assert code == 0, output
    assert " ERROR " not in output  # a clean stop (no job cut short)


async def test_run_in_webhook_mode_serves_the_endpoint_behind_the_secret(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine, server: FakeTelegramServer
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    env = _environment(tmp_path, database_url, server)
    env.update(
        TELEGRAM_MODE="webhook",
        TELEGRAM_WEBHOOK_URL=url,
        TELEGRAM_WEBHOOK_SECRET="webhook-secret-1",
        WEB_HOST="127.0.0.1",
        WEB_PORT=str(port),
    )
    process = await _run(env)
    try:
        await server.wait_until(lambda: server.webhook_url == url, timeout=60)
        update = server.text_update(CHAT, "/start")
        update["update_id"] = 501
        async with aiohttp.ClientSession() as http:
            refused = await http.post(
                url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
            )
            accepted = await http.post(
                url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "webhook-secret-1"}
            )
        sent = await server.wait_for_messages(CHAT, 2, timeout=30)
    finally:
        code, output = await _stop(process)
    assert (refused.status, accepted.status) == (401, 200)
    assert server.webhook_secret == "webhook-secret-1"
    assert sent[1].text.startswith("Menu utama")
    assert len(server.messages_to(CHAT)) == 2  # the refused request had no effect
    assert code == 0, output
    assert " ERROR " not in output  # a clean stop (no job cut short)
