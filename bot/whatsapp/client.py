"""The pywa client for the WhatsApp Cloud API, built from our settings.

Every outbound call (sends, uploads, media downloads) goes through one pywa
`WhatsApp` (async flavour) on our own `httpx.AsyncClient`, so timeouts and
connection limits are ours and the Graph API base URL is `WHATSAPP_API_BASE`
(a BSP's proxy, or the tests' fake server) instead of graph.facebook.com.

The client's requests travel over aiohttp (`AiohttpTransport`), not httpx's
own connection pool: httpcore's pool (1.0.x) scans all its connections
several times for every request it queues or releases, one pass nested in
another (`_assign_requests_to_connections`), so its CPU per send grows with
the connections open, which grow with rate x round trip. At 70 sends/s and a
250 ms round trip that pool took about 30 % of the dispatcher's CPU (4.2
million `is_idle` calls for 1,500 sends, docs/BENCHMARKS.md section 13); a
CPU-starved process then answered later, kept more sends in flight, opened
more connections and spent more per send. aiohttp's connector hands out a
kept-alive connection in constant time, as the Telegram sends (aiogram) do.
pywa sees the same `httpx.AsyncClient`; httpx still builds the requests and
decodes the responses.

pywa is used for the Graph API only: no webhook server (`server=None`); the
webhook is ours (bot/whatsapp/webhook.py), so pywa never handles updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's requests sent over one `aiohttp.ClientSession` (see the module docstring).

    Timeouts come from each request (`httpx.Timeout`: connect, read, pool);
    aiohttp's errors are raised as httpx's (`ConnectTimeout`, `ReadTimeout`,
    `ConnectError`, `ReadError`), so callers see what httpx would raise. The
    session is made on the first request, on the event loop that sends.
    Responses are streamed (media downloads) and decoded by httpx.
    """

    def __init__(self, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                # httpx decodes the body by its Content-Encoding; aiohttp must not first.
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        body = await request.aread()
        try:
            response = await self._open().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            )
        except Exception as exc:
            raise _as_httpx(exc, request, connecting=True) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseBody(response, request),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _ResponseBody(httpx.AsyncByteStream):
    """An aiohttp response's body as httpx reads it; closing it frees the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(64 * 1024):
                yield chunk
        except Exception as exc:
            raise _as_httpx(exc, self._request, connecting=False) from exc

    async def aclose(self) -> None:
        self._response.release()


def _as_httpx(exc: Exception, request: httpx.Request, *, connecting: bool) -> Exception:
    """aiohttp's (or asyncio's) error as the httpx error a caller expects; others as they are."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, asyncio.TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError) or (
        connecting and isinstance(exc, ConnectionError)
    ):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return httpx.ReadError(message, request=request)
    return exc


def build_client(
    settings: WhatsAppSettings,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    limits: httpx.Limits = DEFAULT_LIMITS,
    transport: httpx.AsyncBaseTransport | None = None,
) -> WhatsAppClient:
    """The client for `settings.phone_number_id` with `settings.access_token`.

    `transport`: by default an `AiohttpTransport` of `limits.max_connections`
    (the benchmark passes httpx's own to compare).

    Raises ValueError when the channel is not configured (no phone number id or token).
    """
    if not settings.enabled or settings.access_token is None:
        raise ValueError("WHATSAPP_PHONE_NUMBER_ID and WHATSAPP_ACCESS_TOKEN are required")
    if transport is None:
        transport = AiohttpTransport(max_connections=limits.max_connections or 0)
    http = httpx.AsyncClient(timeout=timeout, transport=transport)
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
