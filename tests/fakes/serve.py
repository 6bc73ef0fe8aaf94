"""The fake Bot API or Graph API in a process of its own, and its mirror in the test.

    python -m tests.fakes.serve telegram|graph

A fake that runs on the test's own event loop stamps each request when that
loop gets to it: a loop that also plays hundreds of people reads sends the
bots spaced correctly late and in bunches, and the fake refuses them as over
the rate (the province proof: 11-72 refusals of Telegram's sliding second with
20 % of the rate unused). In a process of its own the fake judges each request
when it arrives, whatever the test is doing.

The child prints one JSON line, `{"api": <base url>, "control": <url>}`, and
serves until SIGTERM or until its stdin closes (the test died). Its control
server, on a port of its own:

- `POST /call/<name>` with a JSON list of arguments and an object of keyword
  arguments (`{"args": [...], "kwargs": {...}}`): one of the fake's test
  controls (`CONTROLS`) is called, e.g. `enforce_rates`, `open_window`, or
  `answer_delay` (seconds: the fake's `answer_delay_s`, a round trip);
- `GET /state?sent=<n>&calls=<m>[&wait=0]`: waits up to a second (unless
  `wait=0`) for either count to differ from the ones given, then answers
  what the test mirrors: the sent messages and calls after those counts, and
  the counters (refusals by limit, errors by code, the webhook, the menus).

`RemoteTelegramServer` and `RemoteGraphServer` are the fakes' classes on the
test's side: they start the child, mirror its state continuously into the
lists and counters the in-process fakes have (`sent`, `calls`, `refused_by`,
`errors`, ...), so `messages_to`, `calls_of`, `wait_until` and the update
builders work unchanged. Timestamps (`at`) are the child's `time.monotonic()`,
which is the same clock as the test's on Linux (CLOCK_MONOTONIC is system-wide).
Test controls go through `await control(name, ...)`; the in-process control
methods refuse, so a test cannot set limits on its mirror by mistake.

The child keeps what it has (its modules, every request it judged) out of
Python's cyclic garbage collector: `gc.freeze()` once serving and every
`_FREEZE_EVERY_S` after. A full collection over those objects stalled the
child 155 ms twenty seconds into the province proof and 308 ms later
(measured with a loop-lag probe): the sends that arrived during the stall
were all stamped at its end, and a stall over the rate margin's tenth of a
second reads as a burst over Telegram's sliding second that the bots did not
send (the proof's CI failure: one "global" refusal at 20.5 s, 150 in the
second before against the bots' 135/s). The records are kept for the whole
run anyway; what a freeze keeps from being collected is the few cycles made
since the last one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import gc
import itertools
import json
import signal
import sys
from collections.abc import Callable
from typing import Any, Final, Self

import aiohttp
from aiohttp import web

from tests.fakes.graph_api import FakeGraphServer, GraphCall, SentWhatsApp
from tests.fakes.telegram_api import ApiCall, FakeTelegramServer, Refusal, SentMessage

#: The test controls a test may call in the child, by fake.
CONTROLS: Final[dict[str, frozenset[str]]] = {
    "telegram": frozenset(
        {"enforce_rates", "block_chat", "forget_chat", "fail_next", "answer_delay"}
    ),
    "graph": frozenset(
        {"enforce_rates", "open_window", "close_window", "fail_next", "answer_delay"}
    ),
}


def _answer_delay(fake: FakeTelegramServer | FakeGraphServer, seconds: float) -> None:
    """Every answer waits `seconds` after its request was judged (a round trip)."""
    fake.answer_delay_s = float(seconds)


#: Controls that set a fake's attribute rather than call its method.
_SETTERS: Final[dict[str, Callable[..., None]]] = {"answer_delay": _answer_delay}
#: How long a `/state` request waits for something new.
_LONG_POLL_S = 1.0
#: How often the child moves what it holds out of the garbage collector's reach.
_FREEZE_EVERY_S: Final = 1.0


def _json_safe(value: Any) -> Any:
    """`value` with what JSON cannot carry (an uploaded file) as its repr."""
    return json.loads(json.dumps(value, default=repr))


class _Child:
    """The child process's side: one fake and its control server."""

    def __init__(self, kind: str, fake: FakeTelegramServer | FakeGraphServer) -> None:
        self.kind = kind
        self.fake = fake

    def state(self, sent_from: int, calls_from: int) -> dict[str, Any]:
        fake = self.fake
        calls = [
            {**dataclasses.asdict(call), "params": _json_safe(call.params)}
            if isinstance(call, ApiCall)
            else dataclasses.asdict(call)
            for call in fake.calls[calls_from:]
        ]
        state: dict[str, Any] = {
            "sent": [dataclasses.asdict(message) for message in fake.sent[sent_from:]],
            "calls": calls,
        }
        if isinstance(fake, FakeTelegramServer):
            state.update(
                refused_by=dict(fake.refused_by),
                refusals=[dataclasses.asdict(refusal) for refusal in fake.refusals],
                too_many_requests=fake.too_many_requests,
                webhook_url=fake.webhook_url,
                webhook_secret=fake.webhook_secret,
                commands=[[language, commands] for language, commands in fake.commands.items()],
            )
        else:
            state["errors"] = {str(code): count for code, count in fake.errors.items()}
        state["frozen"] = gc.get_freeze_count()
        return state

    async def handle_state(self, request: web.Request) -> web.Response:
        sent_from = int(request.query.get("sent", 0))
        calls_from = int(request.query.get("calls", 0))
        fake = self.fake

        def changed() -> bool:
            return len(fake.sent) != sent_from or len(fake.calls) != calls_from

        if request.query.get("wait", "1") == "1":
            with contextlib.suppress(TimeoutError):
                await fake.wait_until(changed, timeout=_LONG_POLL_S)
        return web.json_response(self.state(sent_from, calls_from))

    async def handle_call(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in CONTROLS[self.kind]:
            return web.json_response({"error": f"no control {name!r}"}, status=404)
        body = await request.json()
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        if name in _SETTERS:
            _SETTERS[name](self.fake, *args, **kwargs)
        else:
            getattr(self.fake, name)(*args, **kwargs)
        return web.json_response({"ok": True})


async def _freeze_now_and_then() -> None:
    """Keep the child's records out of full collections (see the module's docstring)."""
    while True:
        gc.freeze()
        await asyncio.sleep(_FREEZE_EVERY_S)


async def _serve(kind: str) -> None:
    fake: FakeTelegramServer | FakeGraphServer
    if kind == "telegram":
        fake = FakeTelegramServer()
    else:
        from bot.whatsapp.templates import load_templates
        from tests.fakes.graph_api import SHIPPED_TEMPLATES

        fake = FakeGraphServer()
        fake.approve_book(load_templates(SHIPPED_TEMPLATES).templates.values())
    child = _Child(kind, fake)
    control = web.Application()
    control.router.add_get("/state", child.handle_state)
    control.router.add_post("/call/{name}", child.handle_call)
    runner = web.AppRunner(control, handle_signals=False, shutdown_timeout=1.0)
    async with fake:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        control_port = int(runner.addresses[0][1])
        freezer = asyncio.create_task(_freeze_now_and_then())
        print(
            json.dumps({"api": fake.base_url, "control": f"http://127.0.0.1:{control_port}"}),
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # stdin closes when the test's process ends, however it ends.
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        eof = asyncio.create_task(reader.read())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({eof, stopped}, return_when=asyncio.FIRST_COMPLETED)
        eof.cancel()
        stopped.cancel()
        freezer.cancel()
        await runner.cleanup()


class _Remote:
    """The test's side of a fake in a child process: start, mirror, control, stop."""

    kind: str
    _port: int

    def _remote_init(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._control = ""
        self._http: aiohttp.ClientSession | None = None
        self._mirror: asyncio.Task[None] | None = None
        self._mirrored = asyncio.Event()
        #: Objects the child keeps out of the garbage collector (`gc.get_freeze_count()`).
        self.child_frozen = 0

    async def _spawn(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.fakes.serve",
            self.kind,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the fake {self.kind} process ended before it served")
        urls = json.loads(line)
        self._port = int(urls["api"].rsplit(":", 1)[1])
        self._control = urls["control"]
        self._http = aiohttp.ClientSession()
        self._mirror = asyncio.create_task(self._follow())

    async def control(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Call the child's test control `name` (see `CONTROLS`) and wait until it ran."""
        assert self._http is not None
        url = f"{self._control}/call/{name}"
        async with self._http.post(url, json={"args": args, "kwargs": kwargs}) as response:
            if response.status != 200:
                raise RuntimeError(f"{self.kind} control {name}: {await response.text()}")

    async def synced(self) -> None:
        """Until the mirror has everything the child had when this was called."""
        while not await self._pull(wait=False):
            pass

    async def _follow(self) -> None:
        while True:
            try:
                await self._pull()
            except aiohttp.ClientError:
                if self._process is None or self._process.returncode is not None:
                    return
                await asyncio.sleep(0.1)

    async def _pull(self, *, wait: bool = True) -> bool:
        """One look at the child's state; False when another look changed the mirror
        meanwhile (this answer is then dropped: it may be older)."""
        assert self._http is not None
        counts = {"sent": len(self.sent), "calls": len(self.calls)}
        query = {**counts, "wait": int(wait)}
        async with self._http.get(f"{self._control}/state", params=query) as response:
            state = await response.json()
        # Another pull may have applied the same slice meanwhile: apply only what is new.
        if counts != {"sent": len(self.sent), "calls": len(self.calls)}:
            return False
        self._apply(state)
        self.child_frozen = int(state["frozen"])
        self._notify()
        return True

    async def _stop(self) -> None:
        if self._mirror is not None:
            self._mirror.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mirror
        if self._http is not None:
            await self._http.close()
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)

    async def start(self) -> None:
        await self._spawn()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    # Provided by the fake's class.
    _notify: Callable[[], None]
    sent: Any
    calls: Any

    def _apply(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


def _refuse(name: str) -> Callable[..., None]:
    def refused(*args: Any, **kwargs: Any) -> None:
        raise TypeError(f"the fake runs in another process: await control({name!r}, ...)")

    return refused


class RemoteTelegramServer(_Remote, FakeTelegramServer):
    """The fake Bot API in a child process, mirrored (see the module's docstring)."""

    kind = "telegram"
    enforce_rates = _refuse("enforce_rates")
    block_chat = _refuse("block_chat")
    forget_chat = _refuse("forget_chat")
    fail_next = _refuse("fail_next")

    def __init__(self) -> None:
        super().__init__()
        self._remote_init()
        self._by_chat: dict[int, list[SentMessage]] = {}
        # Ids of the people's messages, apart from the child's ids for the bot's messages.
        self._message_ids = itertools.count(500_000_000)

    async def close(self) -> None:
        self._closing = True
        await self._stop()
        await super().close()

    def messages_to(self, chat_id: int) -> list[SentMessage]:
        """As the fake's, from an index (hundreds of waiters ask on every change)."""
        return list(self._by_chat.get(chat_id, ()))

    def _apply(self, state: dict[str, Any]) -> None:
        for fields in state["sent"]:
            message = SentMessage(**fields)
            self.sent.append(message)
            self._by_chat.setdefault(message.chat_id, []).append(message)
        self.calls.extend(ApiCall(**call) for call in state["calls"])
        self.refused_by = collections.Counter(state["refused_by"])
        self.refusals = [Refusal(**refusal) for refusal in state["refusals"]]
        self.too_many_requests = int(state["too_many_requests"])
        self.webhook_url = state["webhook_url"]
        self.webhook_secret = state["webhook_secret"]
        self.commands = {language: commands for language, commands in state["commands"]}


class RemoteGraphServer(_Remote, FakeGraphServer):
    """The fake Graph API in a child process, every shipped template approved, mirrored."""

    kind = "graph"
    enforce_rates = _refuse("enforce_rates")
    open_window = _refuse("open_window")
    close_window = _refuse("close_window")
    fail_next = _refuse("fail_next")

    def __init__(self) -> None:
        super().__init__()
        self._remote_init()
        self._by_recipient: dict[str, list[SentWhatsApp]] = {}

    async def close(self) -> None:
        await self._stop()
        self._notify()

    def messages_to(self, recipient: str) -> list[SentWhatsApp]:
        """As the fake's, from an index (hundreds of waiters ask on every change)."""
        return list(self._by_recipient.get(recipient, ()))

    def _apply(self, state: dict[str, Any]) -> None:
        for fields in state["sent"]:
            message = SentWhatsApp(**fields)
            self.sent.append(message)
            self._by_recipient.setdefault(message.to, []).append(message)
        self.calls.extend(GraphCall(**call) for call in state["calls"])
        self.errors = collections.Counter(
            {int(code): count for code, count in state["errors"].items()}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kind", choices=sorted(CONTROLS))
    asyncio.run(_serve(parser.parse_args().kind))


if __name__ == "__main__":
    main()
