"""Payment receipts sent on WhatsApp, for the web's payments page (issue 13).

Here rather than in bot.web.receipts so that a process without WhatsApp does not
load pywa (bot.cli imports this only when WhatsApp is enabled).
"""

from __future__ import annotations

import logging

import httpx
from pywa_async.errors import WhatsAppError

from bot.web.app import MAX_RECEIPT_BYTES, ReceiptProblem, ReceiptSource
from bot.whatsapp.client import WhatsAppClient

log = logging.getLogger(__name__)

#: The Graph API's "object does not exist" (a media id deleted or never issued).
_GRAPH_NO_OBJECT = 100


class WhatsAppReceipts(ReceiptSource):
    """Receipts sent on WhatsApp: the media's URL from the Graph API, then its bytes."""

    def __init__(self, client: WhatsAppClient) -> None:
        self._client = client

    async def fetch(self, channel: str, file_ref: str) -> tuple[bytes, str] | ReceiptProblem | None:
        if channel != "whatsapp":
            return None
        try:
            media = await self._client.download_media(file_ref, MAX_RECEIPT_BYTES)
        except WhatsAppError as error:
            log.warning("receipt not fetched from WhatsApp: code %s", error.code)
            gone = error.code == _GRAPH_NO_OBJECT or error.status_code == 404
            return ReceiptProblem.GONE if gone else ReceiptProblem.UNAVAILABLE
        except httpx.HTTPStatusError as error:
            # The download URL (valid five minutes) refused: the media went meanwhile.
            log.warning("receipt download refused by WhatsApp: %s", error.response.status_code)
            gone = error.response.status_code in (404, 410)
            return ReceiptProblem.GONE if gone else ReceiptProblem.UNAVAILABLE
        except (httpx.HTTPError, TimeoutError) as error:
            log.warning("receipt not fetched from WhatsApp: %s", type(error).__name__)
            return ReceiptProblem.UNAVAILABLE
        if media is None:
            return ReceiptProblem.TOO_LARGE
        return media.content, media.mime_type
