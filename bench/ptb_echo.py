"""A python-telegram-bot echo bot answered in memory: a baseline of `bench.bench_enrollment`.

Only a benchmark baseline (the bot is aiogram's): python-telegram-bot comes from
pyproject's `bench` extra (`make bench-install`), never from requirements.lock,
and importing this module raises ImportError without it.

The bot's `BaseRequest` answers every call in-process with the same Telegram
answers as the aiogram bots' `LocalSession` (its `answer`), serialised to JSON
bytes and parsed by python-telegram-bot as an HTTP answer would be.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from telegram import Update
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, ContextTypes
from telegram.ext import MessageHandler as PtbMessageHandler
from telegram.ext import filters as ptb_filters
from telegram.request import BaseRequest, RequestData

Answer = Callable[[str, dict[str, Any]], Any]


class LocalRequest(BaseRequest):
    """python-telegram-bot's network seam, answering as Telegram would, without a network."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer

    @property
    def read_timeout(self) -> float | None:
        return None

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        name = url.rsplit("/", 1)[-1]
        params = dict(request_data.json_parameters) if request_data is not None else {}
        body = {"ok": True, "result": self._answer(name, params)}
        return 200, json.dumps(body).encode()


async def _echo_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is not None:
        await context.bot.send_message(chat_id=message.chat_id, text=message.text or "ok")


async def _echo_callback(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    if query is None:
        return
    await query.answer()
    await context.bot.send_message(chat_id=query.from_user.id, text=query.data or "ok")


class PtbEcho:
    """An `Application` with one message and one callback-query handler, fed updates directly."""

    def __init__(self, token: str, answer: Answer) -> None:
        self.application: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .request(LocalRequest(answer))
            .get_updates_request(LocalRequest(answer))
            .updater(None)
            .build()
        )
        self.application.add_handler(PtbMessageHandler(ptb_filters.ALL, _echo_message))
        self.application.add_handler(CallbackQueryHandler(_echo_callback))

    async def start(self) -> None:
        await self.application.initialize()

    async def feed(self, payload: dict[str, Any]) -> None:
        await self.application.process_update(Update.de_json(payload, self.application.bot))

    async def close(self) -> None:
        await self.application.shutdown()
