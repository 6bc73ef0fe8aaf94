"""`sertakan console` as a real process: the chat owns the terminal, log records go to a file."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

#: A record as configure_logging formats it: "2026-12-02 08:15:09,123 INFO name: ...".
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def _environment(data_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SERTAKAN_", "DATABASE_", "TELEGRAM_", "WHATSAPP_", "DISPATCH_"))
    }
    env.update(
        SERTAKAN_DATA_DIR=str(data_dir),
        # DEBUG shows every dispatcher tick: the file must take them, the chat none.
        SERTAKAN_LOG_LEVEL="DEBUG",
        DISPATCH_TICK_INTERVAL_S="0.05",
    )
    return env


def _read(log: Path) -> str:
    return log.read_text(encoding="utf-8") if log.exists() else ""


async def _wait_for_ticks(log: Path, count: int) -> str:
    """The log file's text once it records `count` dispatcher ticks (at most a minute)."""
    async with asyncio.timeout(60):
        while True:
            text = await asyncio.to_thread(_read, log)
            if text.count("outbox tick") >= count:
                return text
            await asyncio.sleep(0.05)


async def test_idle_console_keeps_log_lines_out_of_the_chat_and_in_the_log_file(
    tmp_path: Path,
) -> None:
    # Regression (issue 12, item 14): scheduler lines every 2 s flooded the chat.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "console",
        env=_environment(tmp_path),
        # Outside the repository, so no .env file there can leak in.
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    log = tmp_path / "sertakan.log"
    try:
        logged = await _wait_for_ticks(log, 3)
    finally:
        output, _ = await asyncio.wait_for(process.communicate(b":quit\n"), timeout=30)
    chat = output.decode(errors="replace")
    assert process.returncode == 0, chat
    assert "bot> " in chat  # the chat itself did run
    assert f"the log is written to {log}" in chat
    assert not [line for line in chat.splitlines() if LOG_LINE.search(line)], chat
    assert "DEBUG scheduler.dispatcher: outbox tick" in logged
    # APScheduler's two INFO lines per job run stay out even at DEBUG.
    everything = _read(log)
    assert "Running job" not in everything and "executed successfully" not in everything
    assert log.stat().st_mode & 0o777 == 0o600
