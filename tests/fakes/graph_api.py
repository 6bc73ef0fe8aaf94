"""A small fake WhatsApp Cloud API (Graph API) for tests, over real HTTP on 127.0.0.1.

What the channel calls, with Meta's shapes:

- `POST /v<version>/<phone_number_id>/messages` (JSON): text, interactive
  (reply buttons, list), template and document messages. Answers
  `{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id":
  "wamid.<n>"}]}` (templates add `"message_status": "accepted"`), and checks
  Meta's limits (text 4,096; interactive body 1,024; 3 buttons of 20; a list
  of 10 rows, titles 24, descriptions 72, titles counted in UTF-16 units as
  WhatsApp's clients do, an emoji 2; unique ids; a template button's index a
  string);
- `POST /v<version>/<phone_number_id>/media` (multipart upload) -> `{"id"}`;
- `GET /v<version>/<media_id>` -> url, mime_type, sha256, file_size, id;
- `GET /download/<media_id>`: the media's bytes (the `url` above); `expire_media`
  makes a media unknown (error 100) or its download URL refused (404).

Every route wants `Authorization: Bearer <token>` (else 401, code 190).

Errors come exactly as the Graph API sends them, HTTP status and body
`{"error": {"message": "(#<code>) <title>", "type": "OAuthException", "code",
"error_data": {"messaging_product": "whatsapp", "details"}, "fbtrace_id"}}`:

- `fail_next(code, count, recipient=None)` injects the next error(s) by code,
  for one recipient or for any; `drop_next(count)` closes the connection;
- `enforce_rates(per_second, pair_interval_s, pair_burst=1)`: over
  `per_second` accepted messages in any sliding second -> 130429; the pair
  rate limit -> 131056 (both counted in `errors`). The pair limit is one
  message per `pair_interval_s` to one recipient on average, with bursts of up
  to `pair_burst` messages that borrow from the recipient's future quota
  (`PAIR_BURST`, 45, is Meta's; the default 1 is the strict one-per-interval
  spacing some tests check the bot's pacing against). See `_Rates`;
- `answer_delay_s`: every answer to a message waits that long after the
  message was judged (the Cloud API's round trip; the limits count arrivals);
- the 24-hour window: free-form messages (all but templates) to a recipient
  whose window the test did not open (`open_window`) -> 131047. Construct with
  `enforce_window=False` to accept free-form to anyone;
- `approve(...)`/`approve_book(...)`: templates Meta approved; with any
  approved, an unknown name or language -> 132001, a wrong parameter count -> 132000.

Usage::

    async with FakeGraphServer() as graph:
        client = build_client(graph.settings())
        graph.open_window("6281234567890")
        ...
        [message] = graph.messages_to("6281234567890")
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from aiohttp import web
from pydantic import SecretStr

from bot.settings import WhatsAppSettings
from sertakan_data import WHATSAPP_TEMPLATES, shipped

#: (HTTP status, title, details) of the error codes the channel handles, as Meta sends them.
ERRORS: Final[dict[int, tuple[int, str, str]]] = {
    130429: (
        400,
        "Rate limit hit",
        "Cloud API message throughput has been reached.",
    ),
    131056: (
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    131047: (
        400,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    131026: (
        400,
        "Message undeliverable",
        "Unable to deliver message. Reasons can include: The recipient phone number is not a "
        "WhatsApp phone number.",
    ),
    131009: (400, "Parameter value is not valid", "Parameter value is not valid."),
    131053: (400, "Media upload error", "Unable to upload the media used in the message."),
    132000: (
        400,
        "Number of parameters does not match the expected number of params",
        "body: number of localizable_params does not match the expected number of params",
    ),
    132001: (
        400,
        "Template name does not exist in the translation",
        "template name does not exist in the translation",
    ),
    100: (400, "Invalid parameter", "Invalid parameter."),
    131000: (500, "Something went wrong", "Message failed to send due to an unknown error."),
    131016: (503, "Service unavailable", "A service is temporarily unavailable."),
}

#: Meta's limits for what it accepts.
MAX_TEXT: Final = 4096
MAX_INTERACTIVE_BODY: Final = 1024
MAX_BUTTONS: Final = 3
MAX_BUTTON_TITLE: Final = 20
MAX_LIST_ROWS: Final = 10
MAX_ROW_TITLE: Final = 24
MAX_ROW_DESCRIPTION: Final = 72
MAX_LIST_BUTTON: Final = 20
MAX_SECTION_TITLE: Final = 24
MAX_CAPTION: Final = 1024


@dataclasses.dataclass(slots=True, frozen=True)
class GraphCall:
    """One request as the server saw it (refused ones too)."""

    method: str
    path: str
    json: dict[str, Any] | None
    at: float


@dataclasses.dataclass(slots=True, frozen=True)
class SentWhatsApp:
    """One accepted message: the request's JSON and the wamid it was given."""

    to: str
    type: str
    payload: dict[str, Any]
    id: str
    at: float

    @property
    def text(self) -> str:
        """The text a person reads: a text body, an interactive body, a caption, or ''."""
        if self.type == "text":
            return str(self.payload["text"]["body"])
        if self.type == "interactive":
            return str(self.payload["interactive"]["body"]["text"])
        if self.type == "document":
            return str(self.payload["document"].get("caption", ""))
        return ""

    @property
    def interactive_type(self) -> str | None:
        """ "button" or "list" for interactive messages."""
        if self.type != "interactive":
            return None
        return str(self.payload["interactive"]["type"])

    @property
    def choices(self) -> list[tuple[str, str]]:
        """(id, title) of every reply button or list row, in order."""
        if self.type != "interactive":
            return []
        action = self.payload["interactive"]["action"]
        if self.interactive_type == "button":
            return [(b["reply"]["id"], b["reply"]["title"]) for b in action["buttons"]]
        return [(r["id"], r["title"]) for s in action["sections"] for r in s["rows"]]

    @property
    def template_name(self) -> str | None:
        return str(self.payload["template"]["name"]) if self.type == "template" else None

    @property
    def template_language(self) -> str | None:
        if self.type != "template":
            return None
        return str(self.payload["template"]["language"]["code"])

    @property
    def template_params(self) -> list[str]:
        """The body parameters' texts, in order."""
        if self.type != "template":
            return []
        for component in self.payload["template"].get("components", []):
            if component.get("type") == "body":
                return [str(p["text"]) for p in component.get("parameters", [])]
        return []

    @property
    def template_payloads(self) -> list[str]:
        """The quick-reply buttons' payloads, by index."""
        if self.type != "template":
            return []
        buttons = [
            c for c in self.payload["template"].get("components", []) if c.get("type") == "button"
        ]
        buttons.sort(key=lambda c: int(c["index"]))
        return [str(b["parameters"][0]["payload"]) for b in buttons]


@dataclasses.dataclass(slots=True, frozen=True)
class StoredMedia:
    id: str
    content: bytes
    mime_type: str
    file_name: str | None


@dataclasses.dataclass(slots=True)
class _Injected:
    code: int
    remaining: int
    recipient: str | None


#: Meta's pair rate limit: one message per 6 s to one WhatsApp user, and bursts of up
#: to 45 messages (see `_Rates`).
PAIR_INTERVAL_S: Final = 6.0
PAIR_BURST: Final = 45


@dataclasses.dataclass(slots=True)
class _Rates:
    """Throughput (`per_second` in any sliding second) and the pair rate limit.

    The pair limit as Meta documents it (Cloud API "Throughput", pair rate limits,
    https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput;
    its wording as quoted by https://dualhook.com/docs/capacity-quality-limits and
    https://developers.whats91.com/rate-limits, read 2026-12-03: Meta's page itself
    is not in our reference store): a business number may send 1 message every 6
    seconds to one WhatsApp user; bursts of up to 45 messages in 6 seconds are
    allowed but borrow from future quota: after a burst of 20, about 2 minutes (20 x
    6 s) pass before the pair is back where it started. Modelled as a GCRA (generic
    cell rate algorithm): each accepted message moves the pair's theoretical arrival
    time (`due_by_recipient`, never behind now) on by `pair_interval_s`; a message is
    refused when that time would be more than `pair_burst` intervals ahead of now.
    So `pair_burst` messages at once pass and the next is refused, and after a
    borrowed burst one more passes per interval paid back. `pair_burst` 1 is strict
    spacing: one message per interval.
    """

    per_second: int
    pair_interval_s: float
    pair_burst: int = 1
    accepted: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    #: Per recipient, the theoretical arrival time of the next message (monotonic).
    due_by_recipient: dict[str, float] = dataclasses.field(default_factory=dict)

    def pair_refuses(self, to: str, now: float) -> bool:
        """True if a message to `to` at `now` is over the pair limit; else it is counted."""
        due = max(self.due_by_recipient.get(to, now), now) + self.pair_interval_s
        # A hair of tolerance: float sums of intervals must not refuse an exact pace.
        if due - now > self.pair_burst * self.pair_interval_s + 1e-6:
            return True
        self.due_by_recipient[to] = due
        return False


@dataclasses.dataclass(slots=True, frozen=True)
class _Approved:
    parameters: int
    buttons: int


class _Refused(Exception):
    def __init__(self, code: int, details: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.details = details


#: The templates the project ships (sertakan_data/whatsapp_templates.json), for the fake to approve.
SHIPPED_TEMPLATES: Final = shipped(WHATSAPP_TEMPLATES)


class FakeGraphServer:
    """The fake Graph API. Start with `async with` or `start()` / `close()`."""

    def __init__(
        self,
        token: str = "EAAGfake-access-token",
        phone_number_id: str = "106540352242922",
        api_version: str = "24.0",
        *,
        enforce_window: bool = True,
    ) -> None:
        self.token = token
        self.phone_number_id = phone_number_id
        self.api_version = api_version
        self.enforce_window = enforce_window
        self.calls: list[GraphCall] = []
        #: Accepted messages, in order.
        self.sent: list[SentWhatsApp] = []
        self.media: dict[str, StoredMedia] = {}
        self._expired_downloads: set[str] = set()
        #: Error answers given, by code (injected ones and enforced limits).
        self.errors: collections.Counter[int] = collections.Counter()
        self._open_windows: set[str] = set()
        self._injected: list[_Injected] = []
        self._drops = 0
        self._storm: tuple[int, float] | None = None
        self._rates: _Rates | None = None
        #: Every answer to a message waits this long after it was judged (a slow round trip).
        self.answer_delay_s = 0.0
        self._approved: dict[tuple[str, str], _Approved] = {}
        self._wamids = itertools.count(1)
        self._media_ids = itertools.count(900_000_000_000_001)
        self._traces = itertools.count(1)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v{version}/{phone_id}/messages", self._messages)
        app.router.add_post("/v{version}/{phone_id}/media", self._upload)
        app.router.add_get("/v{version}/{media_id}", self._media_info)
        app.router.add_get("/download/{media_id}", self._download)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._notify()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeGraphServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """The value for WhatsAppSettings.api_base."""
        return f"http://127.0.0.1:{self._port}"

    def settings(self, **overrides: Any) -> WhatsAppSettings:
        """WhatsAppSettings pointing at this server (nothing read from the environment)."""
        values: dict[str, Any] = {
            "phone_number_id": self.phone_number_id,
            "access_token": SecretStr(self.token),
            "app_secret": SecretStr("fake-app-secret"),
            "verify_token": SecretStr("fake-verify-token"),
            "api_base": self.base_url,
            "api_version": self.api_version,
        }
        values.update(overrides)
        return WhatsAppSettings(_env_file=None, **values)

    # --- test controls ----------------------------------------------------------

    def open_window(self, *recipients: str) -> None:
        """The recipients wrote to us: free-form messages to them are accepted."""
        self._open_windows.update(recipients)

    def close_window(self, *recipients: str) -> None:
        self._open_windows.difference_update(recipients)

    def fail_next(self, code: int, count: int = 1, *, recipient: str | None = None) -> None:
        """The next `count` message sends (to `recipient`, or to anyone) answer error `code`."""
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code}")
        self._injected.append(_Injected(code, count, recipient))

    def fail_for(self, code: int, seconds: float) -> None:
        """For the next `seconds`, every message send answers error `code` (an outage or a
        throughput storm: 130429, 131000)."""
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code}")
        self._storm = (code, time.monotonic() + seconds)

    def drop_next(self, count: int = 1) -> None:
        """The next `count` message sends lose their connection (no answer)."""
        self._drops += count

    def enforce_rates(
        self,
        per_second: int = 80,
        pair_interval_s: float = PAIR_INTERVAL_S,
        *,
        pair_burst: int = 1,
    ) -> None:
        """Refuse messages over `per_second` in any sliding second (130429) or over the
        pair rate limit (131056): one per `pair_interval_s` to one recipient, bursts of
        `pair_burst` borrowing from the future (1: strict spacing; Meta's: `PAIR_BURST`)."""
        self._rates = _Rates(per_second, pair_interval_s, pair_burst)

    def approve(self, name: str, language: str, *, parameters: int, buttons: int = 0) -> None:
        """Meta approved template `name` in `language` with that many body parameters."""
        self._approved[(name, language)] = _Approved(parameters, buttons)

    def approve_book(self, templates: Iterable[Any]) -> None:
        """Approve every translation of `bot.whatsapp.templates.Template`s."""
        for template in templates:
            for text in template.texts.values():
                self.approve(
                    template.name,
                    text.code,
                    parameters=len(template.parameters),
                    buttons=len(template.buttons),
                )

    def add_media(self, content: bytes, mime_type: str, file_name: str | None = None) -> str:
        """A media a person sent (for downloads); returns its id."""
        media_id = str(next(self._media_ids))
        self.media[media_id] = StoredMedia(media_id, content, mime_type, file_name)
        return media_id

    def expire_media(self, media_id: str, *, url_only: bool = False) -> None:
        """Meta no longer holds the media (it deletes inbound media after a while): its id is
        unknown from now on (error 100). `url_only`: the id still answers, but the download
        URL it gives is refused (404), as an expired one is."""
        if url_only:
            self._expired_downloads.add(media_id)
        else:
            del self.media[media_id]

    def messages_to(self, recipient: str) -> list[SentWhatsApp]:
        return [message for message in self.sent if message.to == recipient]

    def calls_to(self, path_suffix: str) -> list[GraphCall]:
        return [call for call in self.calls if call.path.endswith(path_suffix)]

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded wait is the point
    ) -> None:
        """Wait until `predicate()` holds (checked after every request); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if predicate():
                    return
                await changed.wait()

    # --- HTTP -------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def _error(self, code: int, details: str | None = None) -> web.Response:
        self.errors[code] += 1
        status, title, default_details = ERRORS[code]
        return web.json_response(
            {
                "error": {
                    "message": f"(#{code}) {title}",
                    "type": "OAuthException",
                    "code": code,
                    "error_data": {
                        "messaging_product": "whatsapp",
                        "details": details or default_details,
                    },
                    "fbtrace_id": f"AfakeTrace{next(self._traces):08d}",
                }
            },
            status=status,
        )

    @staticmethod
    def _unauthorised() -> web.Response:
        return web.json_response(
            {
                "error": {
                    "message": "Invalid OAuth access token - Cannot parse access token",
                    "type": "OAuthException",
                    "code": 190,
                    "fbtrace_id": "AfakeTraceAuth",
                }
            },
            status=401,
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        answer = await self._judge(request)
        if self.answer_delay_s > 0:
            await asyncio.sleep(self.answer_delay_s)
        return answer

    async def _judge(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.calls.append(GraphCall("POST", request.path, body, time.monotonic()))
        try:
            if not self._authorised(request):
                return self._unauthorised()
            if request.match_info["phone_id"] != self.phone_number_id:
                return self._error(100, "Unsupported post request: unknown phone number id")
            if not isinstance(body, dict):
                return self._error(100, "The request body is not JSON")
            if self._drops > 0 and request.transport is not None:
                self._drops -= 1
                request.transport.close()
                return web.Response(status=500)
            if self._storm is not None and time.monotonic() < self._storm[1]:
                return self._error(self._storm[0])
            return self._accept(body)
        except _Refused as refused:
            return self._error(refused.code, refused.details)
        finally:
            self._notify()

    def _accept(self, body: dict[str, Any]) -> web.Response:
        to = str(body.get("to", ""))
        kind = str(body.get("type", ""))
        if body.get("messaging_product") != "whatsapp" or not to.isdigit():
            raise _Refused(100, "messaging_product must be whatsapp and to a phone number")
        injected = self._take_injected(to)
        if injected is not None:
            raise _Refused(injected)
        self._validate(kind, body)
        if self.enforce_window and kind != "template" and to not in self._open_windows:
            raise _Refused(131047)
        self._check_rates(to)
        wamid = f"wamid.{next(self._wamids)}"
        self.sent.append(SentWhatsApp(to, kind, body, wamid, time.monotonic()))
        message: dict[str, Any] = {"id": wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [message],
            }
        )

    def _take_injected(self, to: str) -> int | None:
        for injected in self._injected:
            if injected.remaining > 0 and injected.recipient in (None, to):
                injected.remaining -= 1
                return injected.code
        return None

    def _check_rates(self, to: str) -> None:
        rates = self._rates
        if rates is None:
            return
        now = time.monotonic()
        while rates.accepted and rates.accepted[0] <= now - 1.0:
            rates.accepted.popleft()
        if len(rates.accepted) >= rates.per_second:
            raise _Refused(130429)
        if rates.pair_refuses(to, now):
            raise _Refused(131056)
        rates.accepted.append(now)

    def _validate(self, kind: str, body: dict[str, Any]) -> None:
        """Meta's limits per message type; a violation is refused with 131009 / 100."""
        content = body.get(kind)
        if not isinstance(content, dict):
            raise _Refused(100, f"Param {kind} is required")
        if kind == "text":
            text = content.get("body")
            _require(isinstance(text, str) and text.strip() != "", "text.body is required")
            assert isinstance(text, str)  # refused above otherwise
            _require(len(text) <= MAX_TEXT, f"text.body must be at most {MAX_TEXT} characters")
        elif kind == "interactive":
            self._validate_interactive(content)
        elif kind == "template":
            self._validate_template(content)
        elif kind == "document":
            media_id = content.get("id")
            _require(isinstance(media_id, str) and media_id in self.media, "unknown media id")
            caption = content.get("caption", "")
            _require(len(caption) <= MAX_CAPTION, "document.caption is too long")
        else:
            raise _Refused(100, f"message type {kind!r} is not supported by this fake")

    @staticmethod
    def _validate_interactive(content: dict[str, Any]) -> None:
        text = content.get("body", {}).get("text")
        _require(isinstance(text, str) and text.strip() != "", "interactive.body.text is required")
        _require(len(text) <= MAX_INTERACTIVE_BODY, "interactive.body.text is too long")
        action = content.get("action", {})
        if content.get("type") == "button":
            buttons = action.get("buttons", [])
            _require(0 < len(buttons) <= MAX_BUTTONS, "1 to 3 buttons are allowed")
            titles = [b["reply"]["title"] for b in buttons]
            ids = [b["reply"]["id"] for b in buttons]
            _require(
                all(0 < _units(t) <= MAX_BUTTON_TITLE for t in titles), "button title too long"
            )
            _require(len(set(ids)) == len(ids), "button ids must be unique")
            _require(len(set(titles)) == len(titles), "button titles must be unique")
        elif content.get("type") == "list":
            label = action.get("button", "")
            _require(0 < _units(label) <= MAX_LIST_BUTTON, "list button text too long")
            sections = action.get("sections", [])
            rows = [row for section in sections for row in section.get("rows", [])]
            _require(0 < len(rows) <= MAX_LIST_ROWS, "a list holds 1 to 10 rows")
            _require(
                all(_units(s.get("title", "")) <= MAX_SECTION_TITLE for s in sections),
                "section title too long",
            )
            _require(
                all(0 < _units(r["title"]) <= MAX_ROW_TITLE for r in rows), "row title too long"
            )
            _require(
                all(_units(r.get("description", "")) <= MAX_ROW_DESCRIPTION for r in rows),
                "row description too long",
            )
            ids = [r["id"] for r in rows]
            _require(len(set(ids)) == len(ids), "row ids must be unique")
        else:
            raise _Refused(100, "interactive.type must be button or list here")

    def _validate_template(self, content: dict[str, Any]) -> None:
        name = content.get("name")
        code = content.get("language", {}).get("code")
        _require(isinstance(name, str) and isinstance(code, str), "template name and language")
        components = content.get("components", [])
        params = sum(len(c.get("parameters", [])) for c in components if c.get("type") == "body")
        for component in components:
            for parameter in component.get("parameters", []):
                text = parameter.get("text")
                if text is not None and ("\n" in text or "\t" in text or "     " in text):
                    raise _Refused(
                        131009, "Param text cannot have new-line/tab characters or more than "
                        "4 consecutive spaces"
                    )  # fmt: skip
        buttons = sum(1 for c in components if c.get("type") == "button")
        _require(
            all(isinstance(c.get("index"), str) for c in components if c.get("type") == "button"),
            "a button component's index is a string (\"0\"), as in Meta's examples",
        )
        if not self._approved:
            return
        approved = self._approved.get((str(name), str(code)))
        if approved is None:
            raise _Refused(132001, f"template name ({name}) does not exist in {code}")
        if params != approved.parameters or buttons > approved.buttons:
            raise _Refused(132000)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(GraphCall("POST", request.path, None, time.monotonic()))
        try:
            if not self._authorised(request):
                return self._unauthorised()
            form = await request.post()
            upload = form.get("file")
            if not isinstance(upload, web.FileField) or form.get("messaging_product") != "whatsapp":
                return self._error(100, "file and messaging_product are required")
            content = upload.file.read()
            mime_type = str(form.get("type") or upload.content_type)
            media_id = self.add_media(content, mime_type, upload.filename)
            return web.json_response({"id": media_id})
        finally:
            self._notify()

    async def _media_info(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(GraphCall("GET", request.path, None, time.monotonic()))
        try:
            if not self._authorised(request):
                return self._unauthorised()
            stored = self.media.get(request.match_info["media_id"])
            if stored is None:
                return self._error(100, "Unsupported get request: object does not exist")
            return web.json_response(
                {
                    "messaging_product": "whatsapp",
                    "url": f"{self.base_url}/download/{stored.id}",
                    "mime_type": stored.mime_type,
                    "sha256": hashlib.sha256(stored.content).hexdigest(),
                    "file_size": len(stored.content),
                    "id": stored.id,
                }
            )
        finally:
            self._notify()

    async def _download(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(GraphCall("GET", request.path, None, time.monotonic()))
        try:
            if not self._authorised(request):
                return web.Response(status=401)
            stored = self.media.get(request.match_info["media_id"])
            if stored is None or stored.id in self._expired_downloads:
                return web.Response(status=404)
            return web.Response(body=stored.content, content_type=stored.mime_type)
        finally:
            self._notify()


def _units(text: str) -> int:
    """Length in UTF-16 code units, as WhatsApp's clients count a title (an emoji is 2)."""
    return len(text.encode("utf-16-le")) // 2


def _require(condition: bool, details: str) -> None:
    if not condition:
        raise _Refused(131009, details)
