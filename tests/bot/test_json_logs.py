"""Issue 14 item 6: SERTAKAN_LOG_FORMAT=json, one JSON object per line with the ids, no secrets.

The first test formats records through the handler `configure_logging` builds;
the second runs `sertakan run` in webhook mode as a real process (as
tests/bot/test_cli_run.py does) and reads its whole output.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import log_context
from tests.bot.test_cli_run import CHAT, _environment, _free_port, _run, _stop
from tests.fakes.telegram_api import FakeTelegramServer

NIK = "3201014708900001"
PHONES = ("081234567890", "+62 812-3456-7890", "6281234567890")


def lines_of(output: str) -> list[dict[str, Any]]:
    """Every line of `output` as a JSON object (fails on a line that is not one)."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_a_json_line_carries_the_ids_and_masks_nik_phone_and_token(
    server_token: str = "123456789:TEST-fake-token_abcdefghijklmnopqrstu",
) -> None:
    stream = io.StringIO()
    handler = log_context.prepare(logging.StreamHandler(stream), json=True)
    logger = logging.getLogger("tests.json_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with log_context.bound(request_id="req-7", update_id="501"):
            logger.info("typed %s, phones %s", NIK, ", ".join(PHONES))
            try:
                raise ValueError(f"https://api.telegram.org/bot{server_token}/sendMessage {NIK}")
            except ValueError:
                logger.exception("send failed")
        logger.info("outside any request")
    finally:
        logger.removeHandler(handler)
    first, failure, outside = lines_of(stream.getvalue())
    assert first["request_id"] == "req-7" and first["update_id"] == "501"
    assert first["message"] == "typed [redacted], phones [redacted], [redacted], [redacted]"
    assert first["level"] == "INFO" and first["logger"] == "tests.json_logs"
    assert failure["request_id"] == "req-7" and "ValueError" in failure["exc_info"]
    assert (outside["request_id"], outside["update_id"]) == (None, None)
    text = stream.getvalue()
    assert NIK not in text and server_token not in text
    assert not any(phone in text for phone in PHONES)
    assert "TEST-fake-token" not in text


async def test_sertakan_run_with_json_logs_writes_only_json_lines_with_ids(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine
) -> None:
    async with FakeTelegramServer() as server:
        port = _free_port()
        url = f"http://127.0.0.1:{port}/telegram/webhook"
        env = _environment(tmp_path, database_url, server)
        env.update(
            SERTAKAN_LOG_FORMAT="json",
            TELEGRAM_MODE="webhook",
            TELEGRAM_WEBHOOK_URL=url,
            TELEGRAM_WEBHOOK_SECRET="webhook-secret-1",
            WEB_HOST="127.0.0.1",
            WEB_PORT=str(port),
        )
        process = await _run(env)
        try:
            await server.wait_until(lambda: server.webhook_url == url, timeout=60)
            update = server.text_update(CHAT, NIK)
            update["update_id"] = 501
            secret = {"X-Telegram-Bot-Api-Secret-Token": "webhook-secret-1"}
            async with aiohttp.ClientSession() as http:
                for request_id in ("req-first", "req-again"):
                    headers = {**secret, "X-Request-Id": request_id}
                    async with http.post(url, json=update, headers=headers) as response:
                        assert response.status == 200
                        assert response.headers["X-Request-Id"] == request_id
            await server.wait_for_messages(CHAT, 1, timeout=30)
        finally:
            code, output = await _stop(process)
    assert code == 0, output
    records = lines_of(output)
    [replayed] = [r for r in records if r["message"].startswith("replayed update")]
    assert (replayed["update_id"], replayed["request_id"]) == ("501", "req-again")
    access = [r for r in records if r["logger"] == "aiohttp.access"]
    assert [r["request_id"] for r in access] == ["req-first", "req-again"]
    assert NIK not in output and server.token not in output
