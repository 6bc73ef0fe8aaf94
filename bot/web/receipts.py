"""Payment receipts for the web page, fetched from the channel that holds them (issue 13).

A receipt is stored as the platform's file reference (a Telegram `file_id`, a
WhatsApp media id), never as bytes: the page asks the platform for the file
when it is shown and passes it on, so nothing personal is kept on this server.
A reference the platform no longer knows (WhatsApp deletes media after a
while) is `ReceiptProblem.GONE`; a platform not answering now, `UNAVAILABLE`.
WhatsApp's source is bot.whatsapp.receipts, loaded only where WhatsApp runs (pywa).
"""

from __future__ import annotations

import io
import logging
import mimetypes
from collections.abc import Mapping

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest

from bot.web.app import MAX_RECEIPT_BYTES, ReceiptProblem, ReceiptSource

log = logging.getLogger(__name__)


class TelegramReceipts(ReceiptSource):
    """Receipts sent on Telegram: getFile, then the file itself, through our Bot."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def fetch(self, channel: str, file_ref: str) -> tuple[bytes, str] | ReceiptProblem | None:
        if channel != "telegram":
            return None
        try:
            file = await self._bot.get_file(file_ref)
            if (file.file_size or 0) > MAX_RECEIPT_BYTES:
                return ReceiptProblem.TOO_LARGE
            if not file.file_path:
                return ReceiptProblem.GONE
            buffer = io.BytesIO()
            await self._bot.download_file(file.file_path, destination=buffer)
        except TelegramBadRequest as error:
            log.warning("receipt not found on Telegram: %s", type(error).__name__)
            return ReceiptProblem.GONE
        except TelegramAPIError as error:
            log.warning("receipt not fetched from Telegram: %s", type(error).__name__)
            return ReceiptProblem.UNAVAILABLE
        content_type = mimetypes.guess_type(file.file_path)[0] or "application/octet-stream"
        return buffer.getvalue(), content_type


class ChannelReceipts(ReceiptSource):
    """Each receipt asked of the source for its channel (the channels this process runs)."""

    def __init__(self, sources: Mapping[str, ReceiptSource]) -> None:
        self._sources = dict(sources)

    async def fetch(self, channel: str, file_ref: str) -> tuple[bytes, str] | ReceiptProblem | None:
        source = self._sources.get(channel)
        return await source.fetch(channel, file_ref) if source is not None else None
