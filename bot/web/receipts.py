"""Payment receipts for the web page, fetched from the channel that holds them (issue 13).

A receipt is stored as the platform's file reference (a Telegram `file_id`),
never as bytes: the page asks the platform for the file when it is shown and
streams it on, so nothing personal is kept on this server.
"""

from __future__ import annotations

import io
import logging
import mimetypes

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError

from bot.web.app import ReceiptSource

log = logging.getLogger(__name__)

#: Receipts larger than this are not shown (a photo of a slip is a few hundred KB).
MAX_RECEIPT_BYTES = 10 << 20


class TelegramReceipts(ReceiptSource):
    """Receipts sent on Telegram: getFile, then the file itself, through our Bot."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def fetch(self, channel: str, file_ref: str) -> tuple[bytes, str] | None:
        if channel != "telegram":
            return None
        try:
            file = await self._bot.get_file(file_ref)
            if not file.file_path or (file.file_size or 0) > MAX_RECEIPT_BYTES:
                return None
            buffer = io.BytesIO()
            await self._bot.download_file(file.file_path, destination=buffer)
        except TelegramAPIError as error:
            log.warning("receipt not fetched from Telegram: %s", type(error).__name__)
            return None
        content_type = mimetypes.guess_type(file.file_path)[0] or "application/octet-stream"
        return buffer.getvalue(), content_type
