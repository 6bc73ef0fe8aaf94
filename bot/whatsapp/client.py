"""The pywa client for the WhatsApp Cloud API, built from our settings.

Every outbound call (sends, uploads, media downloads) goes through one pywa
`WhatsApp` (async flavour) on our own `httpx.AsyncClient`, so timeouts and
connection limits are ours and the Graph API base URL is `WHATSAPP_API_BASE`
(a BSP's proxy, or the tests' fake server) instead of graph.facebook.com.

The client's requests travel over aiohttp (`AiohttpTransport`, the
`httpx-aiohttp` package's transport), not httpx's own connection pool:
httpcore's pool (1.0.x) scans all its connections
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

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
import httpx
import httpx_aiohttp
from pywa_async.client import WhatsApp

from bot.send_deadline import OnTimeConnector
from bot.settings import WhatsAppSettings

#: pywa logs this advice at WARNING before re-raising every timeout or connection
#: error; we do give it our own client (`build_client`), so during a Graph API outage
#: it would only double each failed send's log line with a misleading hint. The
#: failure itself is logged by our sender and delivery, with its reason.
_PYWA_ADVICE: Final = "You may want to provide your own `httpx.Client` instance"


class _WithoutPywaAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_PYWA_ADVICE)


logging.getLogger("pywa.api").addFilter(_WithoutPywaAdvice())

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


class AiohttpTransport(httpx_aiohttp.AiohttpTransport):
    """httpx's requests sent over one `aiohttp.ClientSession`: `httpx-aiohttp`'s transport
    (see the module docstring), with its errors named as httpx names them.

    httpx-aiohttp (0.2) maps every `aiohttp.ClientConnectionError` that is not a
    timeout to `httpx.ConnectTimeout`: a refused connection, a reset or a server
    that closed the connection would read "timeout" in the outbox's error and
    the logs. Here they are what httpx's own transport raises: `ConnectError`
    for a connection that could not be made (nothing was sent), `ReadError` for
    one lost after the request went out. Timeouts (connect, pool, read) keep the
    library's mapping (`ConnectTimeout`, `ReadTimeout`). All are
    `httpx.TransportError`s: transient for the sender and the inbound retries
    (bot/whatsapp/errors.py).
    """

    def get_client(self) -> aiohttp.ClientSession:
        """The library's session, its connections from an `OnTimeConnector`
        (bot/send_deadline.py): a reply whose connection is ready only after its place
        in the send budget passed is not written, and takes a new place."""
        connector = OnTimeConnector(
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
            limit=self.limits.max_connections or 0,  # aiohttp: 0 is no limit
        )
        return aiohttp.ClientSession(connector=connector)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as error:
            raise _renamed(error, request) from error.__cause__
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _RenamedErrors(response.stream, request)
        return response


class _RenamedErrors(httpx.AsyncByteStream):
    """A response body whose connection errors while it is read are named as httpx's."""

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TransportError as error:
            raise _renamed(error, self._request) from error.__cause__

    async def aclose(self) -> None:
        await self._stream.aclose()


def _renamed(error: httpx.TransportError, request: httpx.Request) -> httpx.TransportError:
    """`error` as httpx's own transport would name it (see `AiohttpTransport`)."""
    cause = error.__cause__
    if not isinstance(error, httpx.ConnectTimeout) or not isinstance(
        cause, aiohttp.ClientConnectionError
    ):
        return error
    if isinstance(cause, aiohttp.ServerTimeoutError):  # a real timeout
        return error
    message = str(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    return httpx.ReadError(message, request=request)


def build_client(
    settings: WhatsAppSettings,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    limits: httpx.Limits = DEFAULT_LIMITS,
    transport: httpx.AsyncBaseTransport | None = None,
) -> WhatsAppClient:
    """The client for `settings.phone_number_id` with `settings.access_token`.

    `transport`: by default an `AiohttpTransport` of `limits` (the benchmark
    passes httpx's own to compare).

    Raises ValueError when the channel is not configured (no phone number id or token).
    """
    if not settings.enabled or settings.access_token is None:
        raise ValueError("WHATSAPP_PHONE_NUMBER_ID and WHATSAPP_ACCESS_TOKEN are required")
    if transport is None:
        transport = AiohttpTransport(limits=limits)
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
