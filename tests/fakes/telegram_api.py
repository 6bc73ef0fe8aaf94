"""A small fake Telegram Bot API server for tests, served over real HTTP on 127.0.0.1.

It implements the methods the Telegram adapter calls, with Telegram's envelope
(`{"ok": true, "result": ...}` / `{"ok": false, "error_code", "description"}`):
getMe, deleteWebhook, setWebhook, getWebhookInfo, setMyCommands, getUpdates
(long polling with offset confirmation), sendMessage, sendDocument (multipart
upload), answerCallbackQuery, editMessageReplyMarkup, getFile and the file
download route `GET /file/bot<token>/<file_path>` for files a test registered
with `add_file`.

Failures a test can inject: `fail_next` (500, a dropped connection, or a 429
with retry_after), `block_chat` (403 "bot was blocked by the user") and
`forget_chat` (400 "chat not found"). `fault_for` makes a method fail for a
while in one of the shapes seen in outages (`FAULT_SHAPES`: 429 with
retry_after, 500, 502 as JSON or as nginx's HTML page, a request that hangs
and is never processed, and connections refused while the server is away).
`enforce_rates` turns on Telegram's flood control: at most N sends
(sendMessage, sendDocument) in any sliding second and one per second per chat;
a send over either limit is refused with 429 and `parameters.retry_after`,
exactly as Telegram answers, and counted in `too_many_requests`.
`enforce_rates(chat_burst=N)` allows Telegram's short bursts in a private chat
(N sends in any N seconds). `post_webhook` is Telegram in webhook mode: it
POSTs an update to the registered webhook with the secret token header.
`answer_delay_s` holds every answer that long after the request was judged
(the round trip of the real Bot API; flood control counts arrivals).

Usage::

    async with FakeTelegramServer() as server:
        settings = TelegramSettings(token=server.token, api_base=server.base_url)
        server.push_update(server.text_update(42, "halo"))
        sent = await server.wait_for_messages(42, count=1)

aiogram posts multipart/form-data with complex fields JSON-encoded; JSON bodies
(and query strings) are accepted too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

PAYLOADS_DIR = Path(__file__).parent / "telegram_payloads"

BOT_USER: dict[str, Any] = {
    "id": 7000000001,
    "is_bot": True,
    "first_name": "SERTAKAN",
    "username": "SertakanBot",
    "can_join_groups": False,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}

#: Fields whose form value is a plain string even when it looks like JSON ("123").
_STRING_FIELDS = frozenset(
    {"text", "callback_query_id", "url", "secret_token", "language_code", "inline_message_id"}
)


def load_payload(name: str) -> dict[str, Any]:
    """A recorded Telegram update from `telegram_payloads/<name>.json`."""
    data: dict[str, Any] = json.loads((PAYLOADS_DIR / f"{name}.json").read_text("utf-8"))
    return data


@dataclasses.dataclass(slots=True, frozen=True)
class ApiCall:
    """One Bot API request as the server understood it."""

    method: str
    params: dict[str, Any]


@dataclasses.dataclass(slots=True, frozen=True)
class SentMessage:
    """One sendMessage call; `reply_markup` is the decoded JSON markup or None."""

    chat_id: int
    text: str
    reply_markup: dict[str, Any] | None
    message_id: int
    parse_mode: str | None = None
    #: When the server accepted it (time.monotonic()).
    at: float = 0.0

    @property
    def callback_data(self) -> list[str]:
        """The callback_data of every inline button, top to bottom."""
        if not self.reply_markup or "inline_keyboard" not in self.reply_markup:
            return []
        return [
            button["callback_data"]
            for row in self.reply_markup["inline_keyboard"]
            for button in row
            if "callback_data" in button
        ]


@dataclasses.dataclass(slots=True, frozen=True)
class SentDocument:
    """One sendDocument call: the uploaded file and its caption."""

    chat_id: int
    file_name: str
    content: bytes
    caption: str | None
    reply_markup: dict[str, Any] | None
    message_id: int


@dataclasses.dataclass(slots=True, frozen=True)
class ResentFile:
    """A sendPhoto or sendDocument call naming a file already on the server by file_id."""

    method: str
    chat_id: int
    file_id: str


@dataclasses.dataclass(slots=True, frozen=True)
class StoredFile:
    """A file the server can hand out through getFile and the download route."""

    file_id: str
    file_unique_id: str
    file_name: str
    content: bytes
    file_path: str


@dataclasses.dataclass(slots=True, frozen=True)
class _Upload:
    filename: str
    content: bytes


@dataclasses.dataclass(slots=True)
class _Failure:
    remaining: int
    network: bool
    status: int = 500
    retry_after: int | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class Refusal:
    """One flood-control refusal: when (time.monotonic()), by which limit ("global" or
    "chat"), to whom, the text's start, and the sends the sliding second held then."""

    at: float
    limit: str
    chat_id: int
    text: str
    in_last_second: int


@dataclasses.dataclass(slots=True)
class _RateLimits:
    """Flood control: `per_second` sends in any sliding second, and per chat at most
    `chat_burst` sends in any `chat_burst * chat_interval_s` seconds (burst 1: one per
    `chat_interval_s`)."""

    per_second: int
    chat_interval_s: float
    accepted: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    chat_burst: int = 1
    by_chat: dict[int, collections.deque[float]] = dataclasses.field(default_factory=dict)


#: Outage shapes `fault_for` can play.
FAULT_SHAPES = ("429", "500", "502-json", "502-html", "timeout", "refused")
#: nginx's answer when the Bot API behind it is away.
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclasses.dataclass(slots=True)
class _Fault:
    """A method failing in one shape until `until` (time.monotonic()), maybe for one chat."""

    method: str
    shape: str
    until: float
    chat_id: int | None
    retry_after: int
    hang_s: float


#: Methods that count as sending a message for flood control and chat errors.
_SEND_METHODS = frozenset({"sendmessage", "senddocument", "sendphoto"})
#: Telegram's download limit for bots.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024


class FakeTelegramServer:
    """The fake Bot API. Start with `async with` or `start()` / `close()`."""

    def __init__(self, token: str = "123456789:TEST-fake-token_abcdefghijklmnopqrstu") -> None:
        self.token = token
        self.calls: list[ApiCall] = []
        self.sent: list[SentMessage] = []
        #: Highest getUpdates offset seen: every update below it is confirmed.
        self.confirmed_offset = 0
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.commands: dict[str | None, list[dict[str, Any]]] = {}
        self._pending: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._callback_ids = itertools.count(9_000_000_000_000_000)
        self._failures: dict[str, _Failure] = {}
        #: sendDocument calls, in order.
        self.documents: list[SentDocument] = []
        #: sendPhoto / sendDocument calls by file_id, in order.
        self.resent: list[ResentFile] = []
        #: Files registered with `add_file`, by file_id.
        self.files: dict[str, StoredFile] = {}
        #: 429 answers given (flood control and injected ones).
        self.too_many_requests = 0
        #: Flood-control refusals by the limit that refused: "global" or "chat".
        self.refused_by: collections.Counter[str] = collections.Counter()
        #: Every flood-control refusal, in order.
        self.refusals: list[Refusal] = []
        self._blocked: set[int] = set()
        self._unknown_chats: set[int] = set()
        self._rates: _RateLimits | None = None
        self._faults: list[_Fault] = []
        self._comeback: asyncio.Task[None] | None = None
        self._refusing = False
        #: Every answer waits this long after its request was judged (a slow round trip).
        self.answer_delay_s = 0.0
        #: Requests answered with an injected fault, by shape.
        self.faults_played: collections.Counter[str] = collections.Counter()
        self._site: web.TCPSite | None = None
        self._file_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port = 0
        #: The client of `post_webhook` (a new connection per update, as Telegram's).
        self._webhook_http: aiohttp.ClientSession | None = None

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._download)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        self._site = site
        address = self._runner.addresses[0]
        self._port = int(address[1])

    async def close(self) -> None:
        self._closing = True
        if self._comeback is not None:
            self._comeback.cancel()
        self._notify()
        if self._webhook_http is not None:
            await self._webhook_http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegramServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """The value for TelegramSettings.api_base."""
        return f"http://127.0.0.1:{self._port}"

    # --- test controls ----------------------------------------------------------

    def push_update(self, update: Mapping[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an update_id is assigned when missing)."""
        queued = dict(update)
        if "update_id" not in queued:  # setdefault would draw an id even when one is given
            queued["update_id"] = next(self._update_ids)
        self._pending.append(queued)
        self._notify()
        return queued

    async def post_webhook(
        self, update: Mapping[str, Any], *, url: str | None = None, **options: Any
    ) -> int:
        """Webhook mode: POST `update` to the registered webhook (or `url`), with the secret
        token header, as Telegram does; the HTTP status (Telegram redelivers on anything
        but 2xx). `options` go to aiohttp's `post` (`ssl=` for a self-signed certificate).
        """
        target = url or self.webhook_url
        if not target:
            raise RuntimeError("no webhook registered (setWebhook) and no url given")
        headers = {}
        if self.webhook_secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
        if self._webhook_http is None:
            self._webhook_http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True)
            )
        async with self._webhook_http.post(
            target, json=dict(update), headers=headers, **options
        ) as response:
            await response.read()
            return response.status

    def fail_next(
        self,
        method: str,
        count: int = 1,
        *,
        network: bool = False,
        status: int = 500,
        retry_after: int | None = None,
    ) -> None:
        """Make the next `count` calls of `method` fail.

        With `network=False` the server answers `status` (500: aiogram raises
        TelegramServerError; 429 with `retry_after`: Telegram's flood-control
        answer, TelegramRetryAfter); with `network=True` it drops the connection
        (aiogram raises TelegramNetworkError).
        """
        if status == 429 and retry_after is None:
            raise ValueError("a 429 carries retry_after")
        self._failures[method.lower()] = _Failure(count, network, status, retry_after)

    def fault_for(
        self,
        method: str,
        seconds: float,
        shape: str,
        *,
        chat_id: int | None = None,
        retry_after: int = 1,
        hang_s: float = 3.0,
    ) -> None:
        """For the next `seconds`, calls of `method` (to `chat_id`, or to anyone) fail as `shape`.

        "429" answers flood control with `retry_after`; "500"; "502-json" (the Bot
        API's envelope); "502-html" (nginx's page); "timeout" holds the request
        `hang_s` seconds and drops it unprocessed. "refused" is not per method: use
        `refuse_connections`.
        """
        if shape not in FAULT_SHAPES or shape == "refused":
            raise ValueError(f"unknown fault shape {shape!r}")
        until = time.monotonic() + seconds
        self._faults.append(_Fault(method.lower(), shape, until, chat_id, retry_after, hang_s))

    def clear_faults(self) -> None:
        """End every `fault_for` now (the outage is over)."""
        self._faults.clear()

    async def refuse_connections(self, seconds: float) -> None:
        """Stop listening for `seconds` (connections refused), then listen again on the
        same port. Returns at once; the server comes back on its own."""
        assert self._site is not None
        await self._site.stop()
        # Connections the client keeps alive die with the server too.
        self._refusing = True
        self.faults_played["refused"] += 1

        async def come_back() -> None:
            await asyncio.sleep(seconds)
            self._refusing = False
            assert self._runner is not None
            self._site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
            await self._site.start()

        self._comeback = asyncio.create_task(come_back())

    def _fault(self, method: str, params: dict[str, Any]) -> _Fault | None:
        now = time.monotonic()
        self._faults = [fault for fault in self._faults if fault.until > now]
        chat = params.get("chat_id")
        for fault in self._faults:
            if fault.method != method:
                continue
            if fault.chat_id is not None and (chat is None or int(chat) != fault.chat_id):
                continue
            return fault
        return None

    async def _play(self, fault: _Fault, request: web.Request) -> web.StreamResponse:
        self.faults_played[fault.shape] += 1
        self._notify()
        if fault.shape == "429":
            self.too_many_requests += 1
            return _too_many(fault.retry_after)
        if fault.shape == "500":
            return _error(500, "Internal Server Error")
        if fault.shape == "502-json":
            return _error(502, "Bad Gateway")
        if fault.shape == "502-html":
            return web.Response(status=502, text=NGINX_502, content_type="text/html")
        await asyncio.sleep(fault.hang_s)  # "timeout": the client gives up first
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=504)

    def block_chat(self, chat_id: int) -> None:
        """The person blocked the bot: sends to `chat_id` answer 403."""
        self._blocked.add(chat_id)

    def forget_chat(self, chat_id: int) -> None:
        """Sends to `chat_id` answer 400 "chat not found"."""
        self._unknown_chats.add(chat_id)

    def enforce_rates(
        self, per_second: int = 30, chat_interval_s: float = 1.0, *, chat_burst: int = 1
    ) -> None:
        """Refuse sends over `per_second` in any sliding second or closer than
        `chat_interval_s` to the previous accepted send to the same chat (429).

        `chat_burst` > 1: Telegram's "short bursts" in a private chat: up to that many
        sends to one chat in any `chat_burst * chat_interval_s` seconds (the average
        stays one per `chat_interval_s`).
        """
        self._rates = _RateLimits(per_second, chat_interval_s, chat_burst=chat_burst)

    def add_file(
        self, file_id: str, name: str, content: bytes, *, mime_type: str | None = None
    ) -> dict[str, Any]:
        """Register a file for getFile/download; returns its `document` payload for an update."""
        number = next(self._file_ids)
        stored = StoredFile(
            file_id=file_id,
            file_unique_id=f"AgAD{number:06d}",
            file_name=name,
            content=content,
            file_path=f"documents/file_{number}{Path(name).suffix}",
        )
        self.files[file_id] = stored
        document: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": name,
            "file_size": len(content),
        }
        if mime_type is not None:
            document["mime_type"] = mime_type
        return document

    def downloads(self) -> list[str]:
        """The file paths downloaded so far, in order."""
        return [call.params["file_path"] for call in self.calls_of("download")]

    def calls_of(self, method: str) -> list[ApiCall]:
        return [call for call in self.calls if call.method.lower() == method.lower()]

    def messages_to(self, chat_id: int) -> list[SentMessage]:
        return [message for message in self.sent if message.chat_id == chat_id]

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded wait is the point
    ) -> None:
        """Wait until `predicate()` holds (checked after every request); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            await self._wait_for(predicate)

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        while True:
            changed = self._changed
            if predicate():
                return
            await changed.wait()

    async def wait_for_messages(
        self,
        chat_id: int,
        count: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded wait is the point
    ) -> list[SentMessage]:
        """The first `count` messages sent to `chat_id`, waiting up to `timeout` seconds."""
        await self.wait_until(lambda: len(self.messages_to(chat_id)) >= count, timeout)
        return self.messages_to(chat_id)[:count]

    # --- payload builders (real Telegram shapes; update ids increase) -----------

    def user(
        self, user_id: int, first_name: str = "Budi", language_code: str | None = "id"
    ) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "last_name": "Santoso",
        }
        if language_code is not None:
            user["language_code"] = language_code
        return user

    def _message(self, user_id: int, **content: Any) -> dict[str, Any]:
        sender = self.user(user_id)
        return {
            "update_id": next(self._update_ids),
            "message": {
                "message_id": next(self._message_ids),
                "from": sender,
                "chat": {
                    "id": user_id,
                    "first_name": sender["first_name"],
                    "last_name": sender["last_name"],
                    "type": "private",
                },
                "date": int(time.time()),
                **content,
            },
        }

    def document_update(
        self, user_id: int, document: Mapping[str, Any], caption: str | None = None
    ) -> dict[str, Any]:
        """A private message carrying `document` (see `add_file`)."""
        content: dict[str, Any] = {"document": dict(document)}
        if caption is not None:
            content["caption"] = caption
        return self._message(user_id, **content)

    def photo_update(
        self, user_id: int, file_id: str, caption: str | None = None
    ) -> dict[str, Any]:
        """A private photo message (Telegram sends several sizes; the largest is last)."""
        sizes = [
            {"file_id": f"{file_id}-s", "file_unique_id": f"{file_id}-us", "width": 90,
             "height": 120, "file_size": 1_500},
            {"file_id": file_id, "file_unique_id": f"{file_id}-u", "width": 960,
             "height": 1280, "file_size": 98_000},
        ]  # fmt: skip
        content: dict[str, Any] = {"photo": sizes}
        if caption is not None:
            content["caption"] = caption
        return self._message(user_id, **content)

    def text_update(self, user_id: int, text: str) -> dict[str, Any]:
        """A private text message; a leading "/word" gets its bot_command entity."""
        content: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0].encode("utf-16-le")) // 2
            content["entities"] = [{"offset": 0, "length": length, "type": "bot_command"}]
        return self._message(user_id, **content)

    def contact_update(self, user_id: int, phone: str, own: bool = True) -> dict[str, Any]:
        """A shared contact; `own=False` shares somebody else's card."""
        contact: dict[str, Any] = {
            "phone_number": phone,
            "first_name": "Budi" if own else "Andi",
            "user_id": user_id if own else user_id + 1,
        }
        return self._message(user_id, contact=contact)

    def callback_update(self, user_id: int, data: str, message_id: int) -> dict[str, Any]:
        """A press on an inline button with `data` under the bot's message `message_id`."""
        sender = self.user(user_id)
        return {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": str(next(self._callback_ids)),
                "from": sender,
                "message": {
                    "message_id": message_id,
                    "from": BOT_USER,
                    "chat": {"id": user_id, "first_name": sender["first_name"], "type": "private"},
                    "date": int(time.time()) - 5,
                    "text": "…",
                    "reply_markup": {
                        "inline_keyboard": [[{"text": "…", "callback_data": data}]],
                    },
                },
                "chat_instance": "-4562037590375013467",
                "data": data,
            },
        }

    # --- HTTP -------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake every waiter; each re-checks its condition on a fresh event."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {key: _decode(key, value) for key, value in request.query.items()}
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        elif request.can_read_body:
            form = await request.post()
            uploads: dict[str, _Upload] = {}
            for key, value in form.items():
                if isinstance(value, str):
                    params[key] = _decode(key, value)
                elif isinstance(value, web.FileField):  # named elsewhere as attach://<key>
                    uploads[key] = _Upload(value.filename, value.file.read())
            for key, value in list(params.items()):
                if isinstance(value, str) and value.startswith("attach://"):
                    params[key] = uploads.get(value.removeprefix("attach://"))
        return params

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        answer = await self._answer(request)
        if self.answer_delay_s > 0:
            await asyncio.sleep(self.answer_delay_s)
        return answer

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        if self._refusing and request.transport is not None:
            request.transport.close()  # a kept-alive connection to a server that is gone
            return web.Response(status=503)
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        params = await self._params(request)
        fault = self._fault(method.lower(), params)
        if fault is not None:
            return await self._play(fault, request)
        self.calls.append(ApiCall(method, params))
        failure = self._failures.get(method.lower())
        if failure is not None and failure.remaining > 0:
            failure.remaining -= 1
            self._notify()
            if failure.network and request.transport is not None:
                request.transport.close()
                return web.Response(status=500)
            if failure.retry_after is not None:
                self.too_many_requests += 1
                return _too_many(failure.retry_after)
            return _error(failure.status, "Internal Server Error")
        refused = self._refusal(method.lower(), params)
        if refused is not None:
            self._notify()
            return refused
        handler = {
            "getme": self._get_me,
            "deletewebhook": self._delete_webhook,
            "setwebhook": self._set_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setmycommands": self._set_my_commands,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "senddocument": self._send_document,
            "sendphoto": self._send_photo,
            "getfile": self._get_file,
            "answercallbackquery": self._answer_callback_query,
            "editmessagereplymarkup": self._edit_message_reply_markup,
        }.get(method.lower())
        if handler is None:
            return _error(404, "Not Found: method not found")
        try:
            return await handler(params)
        finally:
            self._notify()

    def _refusal(self, method: str, params: dict[str, Any]) -> web.Response | None:
        """The chat errors and flood control of a send, or None when it may go through."""
        if method not in _SEND_METHODS or "chat_id" not in params:
            return None
        chat_id = int(params["chat_id"])
        if chat_id in self._blocked:
            return _error(403, "Forbidden: bot was blocked by the user")
        if chat_id in self._unknown_chats:
            return _error(400, "Bad Request: chat not found")
        rates = self._rates
        if rates is None:
            return None
        now = time.monotonic()
        while rates.accepted and rates.accepted[0] <= now - 1.0:
            rates.accepted.popleft()
        wait = 0.0
        limit = ""
        if len(rates.accepted) >= rates.per_second:
            wait = rates.accepted[0] + 1.0 - now
            limit = "global"
        recent = rates.by_chat.setdefault(chat_id, collections.deque())
        window = rates.chat_burst * rates.chat_interval_s
        while recent and recent[0] <= now - window:
            recent.popleft()
        if len(recent) >= rates.chat_burst:
            wait = max(wait, recent[0] + window - now)
            limit = limit or "chat"
        if wait > 0:
            self.too_many_requests += 1
            self.refused_by[limit] += 1
            text = str(params.get("text", ""))[:40]
            self.refusals.append(Refusal(now, limit, chat_id, text, len(rates.accepted)))
            return _too_many(max(1, math.ceil(wait)))
        rates.accepted.append(now)
        recent.append(now)
        return None

    async def _get_me(self, params: dict[str, Any]) -> web.Response:
        return _ok(BOT_USER)

    async def _delete_webhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = ""
        self.webhook_secret = None
        if params.get("drop_pending_updates") is True:
            self._pending.clear()
        return _ok(True, description="Webhook was deleted")

    async def _set_webhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = str(params.get("url", ""))
        self.webhook_secret = params.get("secret_token")
        return _ok(True, description="Webhook was set")

    async def _get_webhook_info(self, params: dict[str, Any]) -> web.Response:
        return _ok({"url": self.webhook_url, "has_custom_certificate": False,
                    "pending_update_count": len(self._pending)})  # fmt: skip

    async def _set_my_commands(self, params: dict[str, Any]) -> web.Response:
        self.commands[params.get("language_code")] = list(params.get("commands", []))
        return _ok(True)

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook_url:
            return _error(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", 100))
        timeout = float(params.get("timeout", 0))
        if offset > 0:
            self.confirmed_offset = max(self.confirmed_offset, offset)
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
            self._notify()  # waiters on confirmed_offset need not wait for the long poll

        def available() -> list[dict[str, Any]]:
            return [u for u in self._pending if u["update_id"] >= offset][:limit]

        if not available() and timeout > 0 and not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wait_for(lambda: bool(available()) or self._closing)
        return _ok(available())

    async def _send_message(self, params: dict[str, Any]) -> web.Response:
        chat_id = int(params["chat_id"])
        text = str(params.get("text", ""))
        if not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return _error(400, "Bad Request: message is too long")
        markup = params.get("reply_markup")
        message_id = next(self._message_ids)
        self.sent.append(
            SentMessage(
                chat_id, text, markup, message_id, params.get("parse_mode"), time.monotonic()
            )
        )
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": BOT_USER,
            "chat": {"id": chat_id, "first_name": "Budi", "type": "private"},
            "date": int(time.time()),
            "text": text,
        }
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        return _ok(message)

    def _resend(self, method: str, chat_id: int, file_id: str, kind: str) -> web.Response:
        """A file sent again by its file_id: Telegram refuses an id of another kind
        (here: a file registered with `add_file` is a document, any other id a photo)."""
        is_document = file_id in self.files
        if not file_id or is_document != (kind == "document"):
            return _error(400, "Bad Request: wrong file identifier/HTTP URL specified")
        self.resent.append(ResentFile(method, chat_id, file_id))
        message_id = next(self._message_ids)
        return _ok(
            {
                "message_id": message_id,
                "from": BOT_USER,
                "chat": {"id": chat_id, "first_name": "Budi", "type": "private"},
                "date": int(time.time()),
                kind: [
                    {
                        "file_id": file_id,
                        "file_unique_id": f"AgAD{message_id}",
                        "width": 960,
                        "height": 1280,
                    }
                ]
                if kind == "photo"
                else {"file_id": file_id, "file_unique_id": f"AgAD{message_id}"},
            }
        )

    async def _send_photo(self, params: dict[str, Any]) -> web.Response:
        photo = params.get("photo")
        if not isinstance(photo, str):
            return _error(400, "Bad Request: there is no photo in the request")
        return self._resend("sendPhoto", int(params["chat_id"]), photo, "photo")

    async def _send_document(self, params: dict[str, Any]) -> web.Response:
        chat_id = int(params["chat_id"])
        upload = params.get("document")
        if isinstance(upload, str):
            return self._resend("sendDocument", chat_id, upload, "document")
        if not isinstance(upload, _Upload):
            return _error(400, "Bad Request: there is no document in the request")
        caption = params.get("caption")
        if caption is not None and len(str(caption).encode("utf-16-le")) // 2 > 1024:
            return _error(400, "Bad Request: message caption is too long")
        markup = params.get("reply_markup")
        message_id = next(self._message_ids)
        self.documents.append(
            SentDocument(
                chat_id=chat_id,
                file_name=upload.filename,
                content=upload.content,
                caption=None if caption is None else str(caption),
                reply_markup=markup,
                message_id=message_id,
            )
        )
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": BOT_USER,
            "chat": {"id": chat_id, "first_name": "Budi", "type": "private"},
            "date": int(time.time()),
            "document": {
                "file_id": f"BQACAgUAAxkDAAI{message_id}",
                "file_unique_id": f"AgAD{message_id}",
                "file_name": upload.filename,
                "file_size": len(upload.content),
            },
        }
        if caption is not None:
            message["caption"] = str(caption)
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        return _ok(message)

    async def _get_file(self, params: dict[str, Any]) -> web.Response:
        stored = self.files.get(str(params.get("file_id", "")))
        if stored is None:
            return _error(400, "Bad Request: invalid file_id")
        if len(stored.content) > MAX_DOWNLOAD_BYTES:
            return _error(400, "Bad Request: file is too big")
        return _ok(
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.content),
                "file_path": stored.file_path,
            }
        )

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        path = request.match_info["file_path"]
        self.calls.append(ApiCall("download", {"file_path": path}))
        self._notify()
        for stored in self.files.values():
            if stored.file_path == path:
                return web.Response(body=stored.content)
        return _error(404, "Not Found")

    async def _answer_callback_query(self, params: dict[str, Any]) -> web.Response:
        if not params.get("callback_query_id"):
            return _error(400, "Bad Request: query is too old and response timeout expired")
        return _ok(True)

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> web.Response:
        if "chat_id" not in params or "message_id" not in params:
            return _error(400, "Bad Request: message to edit not found")
        chat_id = int(params["chat_id"])
        return _ok(
            {
                "message_id": int(params["message_id"]),
                "from": BOT_USER,
                "chat": {"id": chat_id, "first_name": "Budi", "type": "private"},
                "date": int(time.time()) - 5,
                "edit_date": int(time.time()),
                "text": "…",
            }
        )


def _decode(key: str, value: str) -> Any:
    if key in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _ok(result: Any, description: str | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": True, "result": result}
    if description is not None:
        body["description"] = description
    return web.json_response(body)


def _too_many(retry_after: int) -> web.Response:
    return web.json_response(
        {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        },
        status=429,
    )


def _error(status: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": status, "description": description}, status=status
    )
