"""`sertakan run` as a real process: the composition root wired to Telegram.

The bot is started with `python -m bot run` and environment variables only, as
an operator would, against the fake Bot API on 127.0.0.1 and the test database,
and stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.crypto import generate_key
from storage.migrate import current_revision, head_revision
from tests.fakes.telegram_api import FakeTelegramServer

CHAT = 4242
T = TypeVar("T")


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


#: Ceilings, not expected times: on a loaded machine (load 10 on 2 cores) starting the
#: process (imports, migrations) took over a minute. A process that exits fails at once.
START_WITHIN_S = 300.0
STOP_WITHIN_S = 120.0


@dataclasses.dataclass(slots=True, frozen=True)
class BotProcess:
    """`python -m bot run` with its output going to a file: a pipe read only at the end
    fills up with a busy process's log lines and stops it."""

    process: asyncio.subprocess.Process
    output: Path

    def read_output(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    async def wait_for(self, condition: Awaitable[T], within_s: float = START_WITHIN_S) -> T:
        """`condition`'s result, while the process runs; its exit fails the test at once
        with its output, and `within_s` is only a ceiling."""
        waiting = asyncio.ensure_future(condition)
        exited = asyncio.ensure_future(self.process.wait())
        try:
            done, _ = await asyncio.wait(
                {waiting, exited}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (waiting, exited):
                task.cancel()
            await asyncio.gather(waiting, exited, return_exceptions=True)
        if waiting in done:
            return waiting.result()
        if exited in done:
            pytest.fail(f"the bot exited with {self.process.returncode}:\n{self.read_output()}")
        raise TimeoutError(f"not within {within_s:g} s; the bot's output:\n{self.read_output()}")


async def _run(env: dict[str, str]) -> BotProcess:
    output = Path(env["SERTAKAN_DATA_DIR"]) / "bot-output.log"
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            env=env,
            # Outside the repository, so no .env file there can leak in.
            cwd=env["SERTAKAN_DATA_DIR"],
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )
    return BotProcess(process, output)


async def _stop(bot: BotProcess) -> tuple[int, str]:
    if bot.process.returncode is None:
        bot.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(bot.process.wait(), timeout=STOP_WITHIN_S)
    return code, bot.read_output()


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
        sent = await process.wait_for(server.wait_for_messages(CHAT, 2, timeout=START_WITHIN_S))
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
        await process.wait_for(
            server.wait_until(lambda: server.webhook_url == url, timeout=START_WITHIN_S)
        )
        update = server.text_update(CHAT, "/start")
        update["update_id"] = 501
        async with aiohttp.ClientSession() as http:
            refused = await http.post(
                url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
            )
            accepted = await http.post(
                url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "webhook-secret-1"}
            )
        sent = await process.wait_for(server.wait_for_messages(CHAT, 2, timeout=START_WITHIN_S))
    finally:
        code, output = await _stop(process)
    assert (refused.status, accepted.status) == (401, 200)
    assert server.webhook_secret == "webhook-secret-1"
    assert sent[1].text.startswith("Menu utama")
    assert len(server.messages_to(CHAT)) == 2  # the refused request had no effect
    assert code == 0, output
    assert " ERROR " not in output  # a clean stop (no job cut short)


async def test_run_migrates_a_fresh_database_in_a_child_and_answers(
    tmp_path: Path, server: FakeTelegramServer
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
    process = await _run(_environment(tmp_path, url, server))
    try:
        server.push_update(server.text_update(CHAT, "/start"))
        sent = await process.wait_for(server.wait_for_messages(CHAT, 2, timeout=START_WITHIN_S))
    finally:
        code, output = await _stop(process)
    assert sent[0].text.startswith("Selamat datang di SERTAKAN")
    assert await current_revision(url) == head_revision()
    assert code == 0, output


def test_sertakan_run_parses_without_the_other_commands_modules() -> None:
    """`sertakan run` (and the other built-in commands) build their command line without
    importing the modules of the admin, file, outbox, planning and web commands (about
    0.9 MB of a running bot); any other command, or the top-level help, gets them all."""
    program = (
        "import sys\n"
        "from bot import cli\n"
        "words = ['run', '--workers', '2']\n"
        "full = cli._needs_extensions(words)\n"
        "args = cli.build_parser(extensions=full, keys=full).parse_args(words)\n"
        "assert (args.command, args.workers, full) == ('run', 2, False), args\n"
        "print(sorted(m for m in sys.modules if m.startswith('bot.cli_')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.strip() == "[]"
    from bot import cli

    assert not cli._needs_extensions([])  # no command: `run`
    assert not cli._needs_extensions(["key", "generate"])
    assert cli._needs_extensions(["--help"])
    assert cli._needs_extensions(["outbox", "failed"])
    # A command of an extension parses with the full command line.
    words = ["web", "link", "--admin"]
    assert cli.build_parser(extensions=cli._needs_extensions(words)).parse_args(words).command


def test_the_running_bot_never_imports_what_it_does_not_use() -> None:
    """Alembic, Mako and Pygments (about 13 MB) stay out of the bot's memory: it migrates
    in a child process and knows its head revision as a constant. The CLI's progress bars
    (tqdm), the web pages' templates (jinja2) and the XLSX reader (python_calamine) load
    where they are used, not with the modules `sertakan run` loads; phonenumbers' metadata
    with the first phone number."""
    unused = {"alembic", "mako", "pygments", "tqdm", "jinja2"}
    unused |= {"python_calamine", "phonenumbers"}
    program = (
        "import sys\n"
        "import bot.app, bot.cli, bot.health, bot.telegram, bot.web.app, storage.migrate\n"
        "from storage.migrate import head_revision\n"
        "head_revision()\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(unused)!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.strip() == "[]"
