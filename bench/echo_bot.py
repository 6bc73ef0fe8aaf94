"""A bare aiogram echo bot polling a Bot API server: the baseline of `bench.bench_e2e`.

One `Dispatcher`, one message handler (`message.answer(text)`) and one
callback handler (`callback.answer()` + `callback.message.answer(data)`),
`Dispatcher.start_polling` as an aiogram bot would run. It imports aiogram
only, so its resident memory as a process (`python -m bench.echo_bot BASE_URL
TOKEN`, until SIGTERM) is the idle-memory baseline of `sertakan run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import CallbackQuery, Message

POLLING_TIMEOUT_S = 10


def echo_router() -> Router:
    """One message handler answering the text, one callback handler answering the data."""
    router = Router()

    @router.message()
    async def echo_message(message: Message) -> None:
        await message.answer(message.text or "ok")

    @router.callback_query(F.data)
    async def echo_callback(callback: CallbackQuery) -> None:
        await callback.answer()
        if callback.message is not None:
            await callback.message.answer(callback.data or "ok")

    return router


async def run_echo(base_url: str, token: str, stop: asyncio.Event) -> None:
    """Poll `base_url` and echo every message and button press until `stop` is set."""
    bot = Bot(token=token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))
    dispatcher = Dispatcher()
    dispatcher.include_router(echo_router())
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, polling_timeout=POLLING_TIMEOUT_S)
    )
    await stop.wait()
    await dispatcher.stop_polling()
    with contextlib.suppress(Exception):
        await polling
    await bot.session.close()


async def _main(base_url: str, token: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_echo(base_url, token, stop)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.echo_bot BASE_URL TOKEN")
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
