"""The pywa client for the WhatsApp Cloud API, built from our settings.

Every outbound call (sends, uploads, media downloads) goes through one pywa
`WhatsApp` (async flavour) on our own `httpx.AsyncClient`, so timeouts and
connection limits are ours and the Graph API base URL is `WHATSAPP_API_BASE`
(a BSP's proxy, or the tests' fake server) instead of graph.facebook.com.

pywa is used for the Graph API only: no webhook server (`server=None`); the
webhook is ours (bot/whatsapp/webhook.py), so pywa never handles updates.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Final

import httpx
from pywa_async.client import WhatsApp

from bot.settings import WhatsAppSettings

#: Graph API calls are small JSON requests; uploads and downloads of a few
#: megabytes get the longer read/write timeouts.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0)
#: The dispatcher sends up to about 70 messages per second concurrently.
DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=100)


def graph_base_url(settings: WhatsAppSettings) -> str:
    """`{api_base}/v{api_version}`: what every Graph API path is relative to."""
    return f"{settings.api_base.rstrip('/')}/v{settings.api_version}"


@dataclasses.dataclass(slots=True, frozen=True)
class MediaFile:
    """A media downloaded from the Graph API: its bytes and declared MIME type."""

    content: bytes
    mime_type: str


@dataclasses.dataclass(slots=True)
class WhatsAppClient:
    """The pywa client (`wa`) and the HTTP client under it (`http`, ours to close)."""

    wa: WhatsApp
    http: httpx.AsyncClient

    async def fetch_media(self, media_id: str, max_bytes: int) -> bytes | None:
        """The bytes of an inbound media (a photo, a document); None when larger than `max_bytes`.

        Two Graph API calls: the media's URL and size (`GET /{media_id}`), then
        the download with the access token. A declared size over the limit
        skips the download; a download that grows past the limit is abandoned.
        Other failures raise (pywa's `WhatsAppError`, `httpx.HTTPError`): the
        caller retries the inbound message.
        """
        found = await self.download_media(media_id, max_bytes)
        return found.content if found is not None else None

    async def download_media(self, media_id: str, max_bytes: int) -> MediaFile | None:
        """`fetch_media` with the media's type as the Graph API declares it."""
        media = await self.wa.get_media_url(media_id)
        if media.file_size is not None and media.file_size > max_bytes:
            return None
        received = bytearray()
        async with contextlib.aclosing(self.wa.stream_media(media.url)) as chunks:
            async for chunk in chunks:
                received += chunk
                if len(received) > max_bytes:
                    return None
        return MediaFile(bytes(received), media.mime_type or "application/octet-stream")

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.http.aclose()


def build_client(
    settings: WhatsAppSettings,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    limits: httpx.Limits = DEFAULT_LIMITS,
) -> WhatsAppClient:
    """The client for `settings.phone_number_id` with `settings.access_token`.

    Raises ValueError when the channel is not configured (no phone number id or token).
    """
    if not settings.enabled or settings.access_token is None:
        raise ValueError("WHATSAPP_PHONE_NUMBER_ID and WHATSAPP_ACCESS_TOKEN are required")
    http = httpx.AsyncClient(timeout=timeout, limits=limits)
    wa = WhatsApp(
        phone_id=settings.phone_number_id,
        token=settings.access_token.get_secret_value(),
        session=http,
        server=None,
        api_version=settings.api_version,
        # Updates arrive through our own webhook, which checks the signature itself.
        validate_updates=False,
    )
    # pywa's GraphAPI constructor sets base_url to https://graph.facebook.com/v<version>
    # on the session it is given, with no way to choose another host; the session
    # is our own object, so pointing it at WHATSAPP_API_BASE afterwards is ours to do.
    http.base_url = httpx.URL(graph_base_url(settings))
    return WhatsAppClient(wa=wa, http=http)
