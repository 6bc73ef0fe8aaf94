"""Issue 14 item 3: `sertakan run --workers N`, N processes serving the webhooks on one port.

Real processes against the fake Bot API in webhook mode and the test database:
the supervisor's children share the port (SO_REUSEPORT), a child killed with
SIGKILL is replaced, /metrics sums every process's counters (the killed one's
too), and SIGTERM stops them all. Several processes need PostgreSQL: on SQLite
(and with Telegram polling) the refusal is what is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.launcher import Output
from bot.cli import main
from bot.settings import DatabaseSettings, Settings, TelegramMode, TelegramSettings
from bot.workers import refusal
from storage.db import is_sqlite
from tests.bot.test_cli_run import _environment, _free_port
from tests.bot.test_health import sample
from tests.fakes.telegram_api import FakeTelegramServer

SECRET = "webhook-secret-1"
PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/x"


@contextlib.asynccontextmanager
async def supervisor(
    env: dict[str, str], workers: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Output]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        "--workers",
        str(workers),
        env=env,
        cwd=env["SERTAKAN_DATA_DIR"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = Output(process)
    try:
        yield process, output
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
        await output.close()


async def post_updates(url: str, updates: list[dict[str, Any]]) -> list[int]:
    """POST each update on a new connection (so the kernel may pick any process)."""
    statuses = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for update in updates:
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            async with http.post(url, json=update, headers=headers) as response:
                statuses.append(response.status)
    return statuses


async def wait_ready(base: str, within_s: float = 120) -> None:
    async def ready() -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)

    await asyncio.wait_for(ready(), within_s)


def test_several_workers_are_refused_on_sqlite_and_with_telegram_polling() -> None:
    token = TelegramSettings(token="1:x")
    sqlite = Settings(telegram=token.model_copy(update={"mode": TelegramMode.WEBHOOK}))
    assert "needs PostgreSQL" in (refusal(sqlite, 2) or "")
    polling = Settings(telegram=token, database=DatabaseSettings(url=PG))
    assert "long polling" in (refusal(polling, 2) or "")
    webhook = polling.model_copy(update={"telegram": sqlite.telegram})
    assert refusal(webhook, 2) is None
    assert refusal(polling, 1) is None


async def test_workers_share_the_port_a_killed_one_is_replaced_and_metrics_add_up(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine
) -> None:
    if is_sqlite(database_url):
        pytest.skip("several processes need PostgreSQL (TEST_DATABASE_URL)")
    async with FakeTelegramServer() as server:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/telegram/webhook"
        env = _environment(tmp_path, database_url, server)
        env.update(
            SERTAKAN_LOG_FORMAT="json",
            TELEGRAM_MODE="webhook",
            TELEGRAM_WEBHOOK_URL=url,
            TELEGRAM_WEBHOOK_SECRET=SECRET,
            WEB_HOST="127.0.0.1",
            WEB_PORT=str(port),
            # Replies the killed child held are taken over after this lease (default 30 s).
            REPLY_LEASE_S="2",
        )
        async with supervisor(env, 2) as (process, output):
            started = await output.wait_for(r"^worker \d started", 2)
            pids = {int(re.findall(r"pid (\d+)", line)[0]) for line in started}
            await wait_ready(base)
            chats = range(7001, 7021)
            first = [server.text_update(chat, "/start") for chat in chats]
            assert await post_updates(url, first) == [200] * len(first)
            served_by = {
                r["process"]
                for r in output.records
                if r["logger"] == "aiohttp.access" and "POST /telegram/webhook" in r["message"]
            }
            assert served_by == pids  # both processes took requests on the one port

            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            restarted = await output.wait_for(r"^worker \d started", 3)
            [new_pid] = {int(re.findall(r"pid (\d+)", line)[0]) for line in restarted} - pids
            await output.wait_for(rf"\(pid {victim}\) ended with code -9")
            await wait_ready(base)
            # Until the new child listens, the survivor takes every connection.
            second = [server.text_update(chat, "menu") for chat in chats]
            assert await post_updates(url, second) == [200] * len(second)
            for chat in chats:
                await server.wait_for_messages(chat, 3, timeout=60)

            async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as page:
                text = await page.text()
            handled = sample(text, "sertakan_updates_total", channel="telegram", outcome="ok")
            # Every process's count, the killed one's included (its file stays).
            assert handled == 2 * len(chats)

            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 60)
        assert code == 0, "\n".join(output.raw[-30:])
        for pid in (pids - {victim}) | {new_pid}:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        # Telegram's set-up calls came once, from the supervisor: not from each child at
        # its start, nor from the one started again after the kill.
        assert len(server.calls_of("setWebhook")) == 1
        assert len(server.calls_of("setMyCommands")) == len(server.commands) == 2
        assert len(server.calls_of("getMe")) == 1
        ended = [r["message"] for r in output.records if "ended with code" in r["message"]]
        # Only the killed child counted as a death: the stop restarted nobody.
        assert len(ended) == 1 and f"(pid {victim})" in ended[0]


def test_sertakan_run_with_workers_on_polling_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith(("SERTAKAN_", "DATABASE_", "TELEGRAM_", "WHATSAPP_", "WEB_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setenv("TELEGRAM_TOKEN", "123:abc")
    monkeypatch.setenv("DATABASE_URL", PG)
    assert main(["run", "--workers", "3"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sertakan: --workers 3 needs Telegram in webhook mode")
    assert "TELEGRAM_MODE=webhook" in error
