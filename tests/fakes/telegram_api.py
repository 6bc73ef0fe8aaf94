"""A small fake Telegram Bot API server for tests, served over real HTTP on 127.0.0.1.

It implements the methods the Telegram adapter calls, with Telegram's envelope
(`{"ok": true, "result": ...}` / `{"ok": false, "error_code", "description"}`):
getMe, deleteWebhook, setWebhook, getWebhookInfo, setMyCommands, getUpdates
(long polling with offset confirmation), sendMessage, answerCallbackQuery,
editMessageReplyMarkup.

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
import contextlib
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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


@dataclasses.dataclass(slots=True)
class _Failure:
    remaining: int
    network: bool


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
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port = 0

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        address = self._runner.addresses[0]
        self._port = int(address[1])

    async def close(self) -> None:
        self._closing = True
        self._notify()
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

    def fail_next(self, method: str, count: int = 1, *, network: bool = False) -> None:
        """Make the next `count` calls of `method` fail.

        With `network=False` the server answers 500 (aiogram raises
        TelegramServerError); with `network=True` it drops the connection
        (aiogram raises TelegramNetworkError).
        """
        self._failures[method.lower()] = _Failure(count, network)

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
            for key, value in form.items():
                if isinstance(value, str):
                    params[key] = _decode(key, value)
        return params

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        params = await self._params(request)
        self.calls.append(ApiCall(method, params))
        failure = self._failures.get(method.lower())
        if failure is not None and failure.remaining > 0:
            failure.remaining -= 1
            if failure.network and request.transport is not None:
                request.transport.close()
                return web.Response(status=500)
            return _error(500, "Internal Server Error")
        handler = {
            "getme": self._get_me,
            "deletewebhook": self._delete_webhook,
            "setwebhook": self._set_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setmycommands": self._set_my_commands,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "answercallbackquery": self._answer_callback_query,
            "editmessagereplymarkup": self._edit_message_reply_markup,
        }.get(method.lower())
        if handler is None:
            return _error(404, "Not Found: method not found")
        try:
            return await handler(params)
        finally:
            self._notify()

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
        self.sent.append(SentMessage(chat_id, text, markup, message_id, params.get("parse_mode")))
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


def _error(status: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": status, "description": description}, status=status
    )
