"""Benchmark: one full enrollment conversation through the Telegram adapter.

Each simulated person registers as an ASN first (setup, not timed), then the
enrollment conversation is timed update by update, exactly as Telegram would
deliver it: a JSON payload is validated into an aiogram `Update` and handed to
`TelegramChannel.handle_update`, which runs the engine (one SQLite transaction
per update) and sends the replies through the aiogram `Bot`.

    /daftar, relationship button, occupation button, name, NIK, birth-date
    button, place of birth, phone, street, village, district, regency, plan
    button, first-month button, "Kirim ke PIC" = 15 updates

The baseline is a bare aiogram echo bot (a `Dispatcher` with one message and
one callback-query handler) fed the same update payloads in the same run.

Nothing touches the network: both bots get the same `LocalSession`, an aiogram
`BaseSession` that serialises the request like the HTTP session does, builds
Telegram's JSON answer and parses it back with `check_response`, so both pay
the same outbound cost. Button presses use the callback_data the bot actually
sent, so the conversation is real; after the run the number of sponsorship rows
is checked, so a fast but broken run reports no figures.

    python -m bench.bench_enrollment [--users N] [--rounds R] [--database-url URL]
                                     [--profile FILE]

Targets (issue): >= 1500 steps/s per process and <= 2.5x the echo bot's cost
per update. Exit code 0 for any measurement (MISS is a result, not an error);
1 only when the run itself was broken.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import itertools
import json
import logging
import os
import platform
import pstats
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.base import BaseSession
from aiogram.methods import AnswerCallbackQuery, SendMessage
from aiogram.methods.base import TelegramMethod, TelegramType
from aiogram.types import Update
from pydantic import BaseModel, SecretStr
from sqlalchemy import func, select

import sertakan_data
from bench.echo_bot import echo_router
from bot.app import Runtime, build_runtime, seed_opds_if_empty
from bot.settings import AppSettings, DatabaseSettings, ProgramSettings, Settings, TelegramSettings
from bot.telegram import TelegramChannel, UnreadAnswers
from sertakan_data import shipped
from storage.crypto import generate_key
from storage.db import create_engine, is_sqlite
from storage.migrate import upgrade_to_head
from storage.models import Sponsorship

REPO_ROOT = Path(__file__).resolve().parents[1]
OPD_SEED = shipped(sertakan_data.OPD_SEED)
TOKEN = "123:ABC"

TARGET_STEPS_PER_S = 1500.0
TARGET_RATIO = 2.5
ENROLLMENT_STEPS = 15

BOT_USER: dict[str, Any] = {
    "id": 7000000001,
    "is_bot": True,
    "first_name": "SERTAKAN",
    "username": "SertakanBot",
}
FIRST_USER_ID = 500_000_000


# --- identities -------------------------------------------------------------------


def nip_for(index: int) -> str:
    """A distinct valid PNS NIP: born 1970-01-01 + index//900 days, started at 25, serial."""
    year = 1970 + (index // 900) % 30
    month = 1 + (index // 27_000) % 12
    day = 1 + (index // 900 // 30) % 28
    serial = 1 + index % 900
    sex = 1 + index % 2
    return f"{year:04d}{month:02d}{day:02d}{year + 25:04d}01{sex}{serial:03d}"


def nik_for(index: int) -> str:
    """A distinct valid NIK: a woman born 1980-1999 (ages 26-46 in 2026), varying serial."""
    serial = 1 + index % 9999
    district = 1 + (index // 9999) % 99
    day = 1 + index % 28 + 40  # women: day + 40
    month = 1 + index % 12
    year = 80 + index % 20  # 1980-1999
    return f"3201{district:02d}{day:02d}{month:02d}{year:02d}{serial:04d}"


# --- outbound: a local Bot API session ----------------------------------------------


@dataclass(slots=True)
class Keyboard:
    message_id: int
    buttons: list[tuple[str, str]]  # (label, callback_data)


class LocalSession(UnreadAnswers, BaseSession):
    """Answers Bot API calls in-process, the way Telegram would, without a network.

    With `UnreadAnswers` as the adapter's own HTTP session (`TelegramSession`): the
    answers of the adapter's `UnreadSendMessage` calls are not built into types (the
    echo bots read theirs: they send plain `SendMessage`).

    Per call: the method is dumped and every field prepared as `AiohttpSession`
    does for its form body; the answer is built as Telegram's JSON envelope and
    parsed back through `BaseSession.check_response` into aiogram objects.
    """

    def __init__(self) -> None:
        super().__init__()
        self._message_ids = itertools.count(10_000)
        #: The latest inline keyboard sent to each chat.
        self.keyboards: dict[int, Keyboard] = {}
        #: The latest text sent to each chat.
        self.last_text: dict[int, str] = {}
        self.calls: dict[str, int] = {}
        #: Seconds in aiogram's pydantic work: dumping the method, parsing the answer.
        self.timing = {"dump": 0.0, "parse": 0.0}

    async def close(self) -> None:
        return None

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 (aiogram's signature)
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError("no file downloads in this benchmark")
        yield b""  # an async generator, as in BaseSession

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 (aiogram's signature)
    ) -> TelegramType:
        perf = time.perf_counter
        started = perf()
        files: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files)
            if prepared:
                params[key] = prepared
        self.timing["dump"] += perf() - started
        name = method.__api_method__
        self.calls[name] = self.calls.get(name, 0) + 1
        content = self.json_dumps({"ok": True, "result": self.answer(name, params)})
        started = perf()
        response = self.check_response(bot=bot, method=method, status_code=200, content=content)
        self.timing["parse"] += perf() - started
        return response.result  # type: ignore[return-value]

    def answer(self, name: str, params: dict[str, Any]) -> Any:
        """Telegram's `result` for the call `name` with its form fields `params`."""
        if name == "sendMessage":
            return self._sent_message(params)
        if name == "answerCallbackQuery":
            return True
        if name == "getMe":
            return BOT_USER
        if name == "editMessageReplyMarkup":
            chat_id = int(params["chat_id"])
            return {
                "message_id": int(params["message_id"]),
                "from": BOT_USER,
                "chat": {"id": chat_id, "type": "private", "first_name": "Bench"},
                "date": int(time.time()) - 1,
                "edit_date": int(time.time()),
                "text": "…",
            }
        raise RuntimeError(f"LocalSession does not implement {name}")

    def _sent_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        message_id = next(self._message_ids)
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": BOT_USER,
            "chat": {"id": chat_id, "type": "private", "first_name": "Bench"},
            "date": int(time.time()),
            "text": params["text"],
        }
        self.last_text[chat_id] = params["text"]
        markup = params.get("reply_markup")
        if markup:
            decoded = json.loads(markup)
            if "inline_keyboard" in decoded:
                # Telegram echoes only inline keyboards in the sent message.
                message["reply_markup"] = decoded
                self.keyboards[chat_id] = Keyboard(
                    message_id,
                    [
                        (button["text"], button["callback_data"])
                        for row in decoded["inline_keyboard"]
                        for button in row
                        if "callback_data" in button
                    ],
                )
        return message


def make_bot(session: LocalSession) -> Bot:
    return Bot(token=TOKEN, session=session, default=DefaultBotProperties(parse_mode=None))


# --- inbound: Telegram update payloads ----------------------------------------------


def _bare(label: str) -> str:
    """A label without its leading emoji and spaces, casefolded."""
    return re.sub(r"^\W+", "", label.casefold())


def pick_button(buttons: list[tuple[str, str]], label_part: str, where: str) -> str:
    """The callback_data of the one button whose label contains `label_part` ("": the first).

    "Setuju" against "Tidak setuju": among several, the label starting with it.
    Raises BenchBroken when not exactly one button matches.
    """
    wanted = label_part.casefold()
    if not wanted:
        matches = buttons[:1]
    else:
        matches = [b for b in buttons if wanted in b[0].casefold()]
        if len(matches) > 1:
            matches = [b for b in matches if _bare(b[0]).startswith(wanted)]
    if len(matches) != 1:
        labels = [b[0] for b in buttons]
        raise BenchBroken(f"{where}: {label_part!r} matches {len(matches)} of {labels}")
    return matches[0][1]


class Payloads:
    """Builds update payloads as Telegram sends them; buttons come from what the bot sent."""

    def __init__(self, session: LocalSession) -> None:
        self._session = session
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._callback_ids = itertools.count(4_000_000_000_000_000_000)

    @staticmethod
    def _user(user_id: int) -> dict[str, Any]:
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": "Budi",
            "last_name": f"U{user_id}",
            "language_code": "id",
        }

    def _message(self, user_id: int, **content: Any) -> dict[str, Any]:
        return {
            "update_id": next(self._update_ids),
            "message": {
                "message_id": next(self._message_ids),
                "from": self._user(user_id),
                "chat": {"id": user_id, "first_name": "Budi", "type": "private"},
                "date": int(time.time()),
                **content,
            },
        }

    def text(self, user_id: int, text: str) -> dict[str, Any]:
        content: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0])
            content["entities"] = [{"offset": 0, "length": length, "type": "bot_command"}]
        return self._message(user_id, **content)

    def contact(self, user_id: int, phone: str) -> dict[str, Any]:
        contact = {"phone_number": phone, "first_name": "Budi", "user_id": user_id}
        return self._message(user_id, contact=contact)

    def press(self, user_id: int, label_part: str) -> dict[str, Any]:
        """Press the button of the bot's latest keyboard whose label contains `label_part`."""
        keyboard = self._session.keyboards.get(user_id)
        if keyboard is None:
            raise BenchBroken(f"user {user_id}: no keyboard to press {label_part!r}")
        last = self._session.last_text.get(user_id, "")
        where = f"user {user_id}, last text {last[:200]!r}"
        data = pick_button(keyboard.buttons, label_part, where)
        return {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": str(next(self._callback_ids)),
                "from": self._user(user_id),
                "message": {
                    "message_id": keyboard.message_id,
                    "from": BOT_USER,
                    "chat": {"id": user_id, "first_name": "Budi", "type": "private"},
                    "date": int(time.time()) - 1,
                    "text": "…",
                    "reply_markup": {
                        "inline_keyboard": [
                            [{"text": lb, "callback_data": cd}] for lb, cd in keyboard.buttons
                        ],
                    },
                },
                "chat_instance": str(-4562037590375013467 - user_id),
                "data": data,
            },
        }


class BenchBroken(RuntimeError):
    """The conversation did not go as a person's would: no figures are reported."""


# Each step: (kind, argument) where kind is "text", "contact", "press" (a label
# part) or "press_first" (the first button); the argument may depend on the user.
Step = tuple[str, Callable[[int], str]]


def _const(value: str) -> Callable[[int], str]:
    return lambda _index: value


REGISTRATION: list[Step] = [
    ("text", _const("/start")),
    ("press", _const("Daftar sebagai ASN")),
    ("press", _const("Setuju")),
    ("text", nip_for),
    ("text", _const("Budi Santoso")),
    ("text", _const("kesehatan")),
    ("press", _const("Dinas Kesehatan")),
    ("contact", _const("081234567890")),
    ("press", _const("Konfirmasi")),
]

ENROLLMENT: list[Step] = [
    ("text", _const("/daftar")),
    ("press", _const("Bekerja untuk saya")),
    ("press", _const("Asisten rumah tangga")),
    ("text", _const("Siti Aminah")),
    ("text", nik_for),
    ("press", _const("Ya, benar")),
    ("text", _const("Bogor")),
    ("text", _const("081298765432")),
    ("text", _const("Jl. Melati No. 5 RT 02/RW 01")),
    ("text", _const("Sukamaju")),
    ("text", _const("Ciawi")),
    ("text", _const("Kabupaten Bogor")),
    ("press", _const("Bulanan")),
    ("press_first", _const("")),  # the first month offered (next month)
    ("press", _const("Kirim ke PIC")),
]
assert len(ENROLLMENT) == ENROLLMENT_STEPS


# --- the two bots -------------------------------------------------------------------


class Ours:
    """The SERTAKAN Telegram adapter on a fresh runtime."""

    def __init__(self, runtime: Runtime, session: LocalSession) -> None:
        self.runtime = runtime
        self.session = session
        self.channel = TelegramChannel(
            runtime.engine,
            runtime.settings.telegram,
            runtime.clock,
            catalogs=runtime.catalogs,
            database=runtime.db,
            cipher=runtime.cipher,
            session=session,
        )
        self.bot = self.channel.bot

    async def feed(self, payload: dict[str, Any]) -> None:
        update = Update.model_validate(payload, context={"bot": self.bot})
        await self.channel.handle_update(update)
        # As a person sees it: the update is done when its replies went out. The
        # delivered rows are deleted in batches meanwhile, on the same connection.
        await self.channel.replies.idle()


class Echo:
    """A bare aiogram echo bot: one Dispatcher, one router, two handlers."""

    def __init__(self, session: LocalSession) -> None:
        self.session = session
        self.bot = make_bot(session)
        self.dispatcher = Dispatcher()
        self.dispatcher.include_router(echo_router())

    async def feed(self, payload: dict[str, Any]) -> None:
        update = Update.model_validate(payload, context={"bot": self.bot})
        await self.dispatcher.feed_update(self.bot, update)


class Bare:
    """aiogram without a Dispatcher: the `Update` parsed, the same echo sent through `Bot`."""

    def __init__(self, session: LocalSession) -> None:
        self.session = session
        self.bot = make_bot(session)

    async def feed(self, payload: dict[str, Any]) -> None:
        update = Update.model_validate(payload, context={"bot": self.bot})
        if update.message is not None:
            message = update.message
            await self.bot(SendMessage(chat_id=message.chat.id, text=message.text or "ok"))
        elif update.callback_query is not None:
            query = update.callback_query
            await self.bot(AnswerCallbackQuery(callback_query_id=query.id))
            await self.bot(SendMessage(chat_id=query.from_user.id, text=query.data or "ok"))


class Baseline(Protocol):
    async def feed(self, payload: dict[str, Any]) -> None:
        """Handle one update payload and send its answers."""
        ...


class ClosableBaseline(Baseline, Protocol):
    async def close(self) -> None:
        """Release what the bot holds."""
        ...


PTB_MISSING = "skipped: python-telegram-bot not installed (make bench-install)"


async def ptb_baseline() -> ClosableBaseline | None:
    """The python-telegram-bot echo bot, started; None when the `bench` extra is absent."""
    try:
        from bench.ptb_echo import PtbEcho
    except ImportError:
        return None
    bot = PtbEcho(TOKEN, LocalSession().answer)
    await bot.start()
    return bot


# --- the driver ---------------------------------------------------------------------


def _payload(payloads: Payloads, kind: str, user_id: int, argument: str) -> dict[str, Any]:
    if kind == "text":
        return payloads.text(user_id, argument)
    if kind == "contact":
        return payloads.contact(user_id, argument)
    return payloads.press(user_id, argument)


async def converse(
    ours: Ours,
    payloads: Payloads,
    steps: list[Step],
    users: range,
    record: list[dict[str, Any]] | None = None,
    profiler: cProfile.Profile | None = None,
) -> float:
    """Run `steps` for every user in turn; returns the seconds spent handling updates."""
    elapsed = 0.0
    perf = time.perf_counter
    for index in users:
        user_id = FIRST_USER_ID + index
        for kind, argument in steps:
            payload = _payload(payloads, kind, user_id, argument(index))
            if record is not None:
                record.append(payload)
            if profiler is not None:
                profiler.enable()
            start = perf()
            await ours.feed(payload)
            elapsed += perf() - start
            if profiler is not None:
                profiler.disable()
    return elapsed


async def replay(echo: Baseline, recorded: list[dict[str, Any]]) -> float:
    elapsed = 0.0
    perf = time.perf_counter
    for payload in recorded:
        start = perf()
        await echo.feed(payload)
        elapsed += perf() - start
    return elapsed


class _CountWarnings(logging.Handler):
    """Counts WARNING+ records: the adapter swallows delivery errors and only logs them."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{record.name}: {record.getMessage()[:300]}"


@dataclass(slots=True)
class Result:
    backend: str
    users: int
    rounds: int
    updates: int
    ours_s: float
    #: Seconds per baseline ("echo", "bare", "ptb"), summed over rounds.
    baseline_s: dict[str, float] = field(default_factory=dict)
    #: ours / baseline per round, per baseline.
    round_ratios: dict[str, list[float]] = field(default_factory=dict)
    sponsorships: int = 0
    #: µs per update of aiogram's pydantic work in our adapter (see `_pydantic_share`).
    pydantic_us: dict[str, float] = field(default_factory=dict)

    @property
    def echo_s(self) -> float:
        return self.baseline_s["echo"]

    @property
    def ours_steps_per_s(self) -> float:
        return self.updates / self.ours_s

    @property
    def echo_steps_per_s(self) -> float:
        return self.updates / self.echo_s

    @property
    def ours_us(self) -> float:
        return self.ours_s / self.updates * 1e6

    @property
    def echo_us(self) -> float:
        return self.echo_s / self.updates * 1e6

    @property
    def ratio(self) -> float:
        """ours / echo: the median of the rounds (one slow round on a noisy VM moves it less)."""
        return statistics.median(self.round_ratios["echo"])

    def verdicts(self) -> tuple[bool, bool]:
        return self.ours_steps_per_s >= TARGET_STEPS_PER_S, self.ratio <= TARGET_RATIO


def _settings(data_dir: Path, url: str) -> Settings:
    return Settings(
        app=AppSettings(
            data_dir=data_dir,
            nik_key=SecretStr(generate_key()),
            opd_seed_file=OPD_SEED,
            log_level="WARNING",
        ),
        database=DatabaseSettings(url=url, auto_migrate=True),
        program=ProgramSettings(),
        telegram=TelegramSettings(token=SecretStr(TOKEN)),
    )


async def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            await connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def measure(
    url: str,
    data_dir: Path,
    *,
    users: int,
    rounds: int,
    warmup: int,
    profile_path: Path | None = None,
) -> Result:
    """Warm up, then `rounds` x (our adapter on users/rounds people, echo on the same updates)."""
    backend = "sqlite" if is_sqlite(url) else "postgresql"
    if backend != "sqlite":
        await _reset_postgres(url)
        await upgrade_to_head(url)
    settings = _settings(data_dir, url)
    runtime = await build_runtime(settings, clock=_utc_now, migrate=backend == "sqlite")
    warnings = _CountWarnings()
    logging.getLogger().addHandler(warnings)
    try:
        if await seed_opds_if_empty(runtime) == 0:
            raise BenchBroken(f"no OPDs loaded from {OPD_SEED}")
        ours_session = LocalSession()
        ours = Ours(runtime, ours_session)
        baselines: dict[str, Baseline] = {
            "echo": Echo(LocalSession()),
            "bare": Bare(LocalSession()),
        }
        ptb = await ptb_baseline()
        if ptb is not None:
            baselines["ptb"] = ptb
        payloads = Payloads(ours_session)
        total = warmup + users

        # Setup, not timed: every person registers once.
        await converse(ours, payloads, REGISTRATION, range(total))

        # Warm-up: every bot, same updates.
        recorded: list[dict[str, Any]] = []
        await converse(ours, payloads, ENROLLMENT, range(warmup), recorded)
        for baseline in baselines.values():
            await replay(baseline, recorded)

        # Long-lived objects made so far (both bots, mappers, models, setup data)
        # leave the collector's generations, as a server's start-up objects do
        # after `bot.app.build_runtime` (gc.freeze); applies to every bot alike.
        gc.collect()
        gc.freeze()

        profiler = cProfile.Profile() if profile_path is not None else None
        ours_s = 0.0
        baseline_s = dict.fromkeys(baselines, 0.0)
        round_ratios: dict[str, list[float]] = {name: [] for name in baselines}
        ours_session.timing = {"dump": 0.0, "parse": 0.0}
        timed: list[dict[str, Any]] = []
        bounds = [warmup + users * r // rounds for r in range(rounds + 1)]
        for first, end in itertools.pairwise(bounds):
            recorded = []
            gc.collect()
            ours_round = await converse(
                ours, payloads, ENROLLMENT, range(first, end), recorded, profiler
            )
            ours_s += ours_round
            timed.extend(recorded)
            for name, baseline in baselines.items():
                gc.collect()
                seconds = await replay(baseline, recorded)
                baseline_s[name] += seconds
                round_ratios[name].append(ours_round / seconds)

        if profiler is not None and profile_path is not None:
            profiler.dump_stats(str(profile_path))
        if ptb is not None:
            await ptb.close()

        async with runtime.sessionmaker() as db_session:
            sponsorships = await db_session.scalar(select(func.count()).select_from(Sponsorship))
        if sponsorships != total:
            raise BenchBroken(f"expected {total} sponsorships, found {sponsorships}")
        if warnings.count:
            raise BenchBroken(f"{warnings.count} warnings logged, first: {warnings.first}")
        expected_sends = {"sendMessage", "answerCallbackQuery"}
        if set(ours_session.calls) != expected_sends:
            raise BenchBroken(f"unexpected outbound calls: {ours_session.calls}")
        return Result(
            backend=backend,
            users=users,
            rounds=rounds,
            updates=users * ENROLLMENT_STEPS,
            ours_s=ours_s,
            baseline_s=baseline_s,
            round_ratios=round_ratios,
            sponsorships=users,
            pydantic_us=_pydantic_share(ours.bot, timed, ours_session.timing),
        )
    finally:
        logging.getLogger().removeHandler(warnings)
        await runtime.close()


def _count_models(value: Any) -> int:
    """How many pydantic models `value` is made of (itself and everything nested)."""
    if isinstance(value, BaseModel):
        return 1 + sum(_count_models(getattr(value, name)) for name in type(value).model_fields)
    if isinstance(value, list | tuple):
        return sum(_count_models(item) for item in value)
    return 0


def _pydantic_share(
    bot: Bot, payloads: list[dict[str, Any]], timing: dict[str, float]
) -> dict[str, float]:
    """µs per update of aiogram's pydantic work in our adapter's timed updates.

    `update_validate`: `Update.model_validate` of the same payloads again (what the
    adapter pays per update); `update_construct`: `Update.model_construct` of them, a
    lower bound for building the update without validation (shallow: not usable as is);
    `method_dump` and `answer_parse`: measured in `LocalSession` during the timed
    rounds (the method dumped for the request, the answer parsed into aiogram types).
    """
    count = len(payloads)
    perf = time.perf_counter
    started = perf()
    for payload in payloads:
        Update.model_validate(payload, context={"bot": bot})
    validate = perf() - started
    started = perf()
    for payload in payloads:
        Update.model_construct(**payload)
    construct = perf() - started
    sample = payloads[:300]
    models = sum(_count_models(Update.model_validate(p, context={"bot": bot})) for p in sample)
    return {
        "update_validate": validate / count * 1e6,
        "update_construct": construct / count * 1e6,
        "method_dump": timing["dump"] / count * 1e6,
        "answer_parse": timing["parse"] / count * 1e6,
        "update_models": models / len(sample),
    }


def _report(result: Result) -> None:
    speed_ok, ratio_ok = result.verdicts()
    print(f"\n== enrollment conversation, Telegram adapter, {result.backend} ==")
    print(
        f"{result.users} users x {ENROLLMENT_STEPS} steps = {result.updates} updates "
        f"in {result.rounds} rounds (our adapter, then the echo bot, per round); "
        f"{result.sponsorships} sponsorships verified"
    )
    names = {
        "echo": "aiogram echo (Dispatcher)",
        "bare": "bare aiogram (no Dispatcher)",
        "ptb": "python-telegram-bot echo",
    }
    print(f"{'':30}{'steps/s':>10}{'us/update':>12}{'ours/it, median (min-max of rounds)':>40}")
    print(f"{'SERTAKAN adapter':30}{result.ours_steps_per_s:>10.0f}{result.ours_us:>12.0f}")
    for name, seconds in result.baseline_s.items():
        ratios = result.round_ratios[name]
        spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        print(
            f"{names[name]:30}{result.updates / seconds:>10.0f}"
            f"{seconds / result.updates * 1e6:>12.0f}{spread:>40}"
        )
    if "ptb" not in result.baseline_s:
        print(f"{names['ptb']:30}{PTB_MISSING}")
    share = result.pydantic_us
    aiogram_us = share["update_validate"] + share["method_dump"] + share["answer_parse"]
    print(
        f"aiogram's pydantic work in ours, us/update: Update.model_validate "
        f"{share['update_validate']:.0f} ({share['update_models']:.1f} models; "
        f"model_construct {share['update_construct']:.0f}), methods dumped "
        f"{share['method_dump']:.0f}, answers parsed {share['answer_parse']:.0f}: "
        f"{aiogram_us:.0f} of {result.ours_us:.0f} ({aiogram_us / result.ours_us:.0%})"
    )
    print(
        f"target >= {TARGET_STEPS_PER_S:.0f} steps/s: "
        f"{'PASS' if speed_ok else 'MISS'} ({result.ours_steps_per_s:.0f})"
    )
    print(
        f"target <= {TARGET_RATIO:.1f}x echo (median of rounds): "
        f"{'PASS' if ratio_ok else 'MISS'} ({result.ratio:.2f}x)"
    )
    print(
        json.dumps(
            {
                "benchmark": "enrollment",
                "backend": result.backend,
                "users": result.users,
                "updates": result.updates,
                "ours_steps_per_s": round(result.ours_steps_per_s, 1),
                "echo_steps_per_s": round(result.echo_steps_per_s, 1),
                "ours_us_per_update": round(result.ours_us, 1),
                "echo_us_per_update": round(result.echo_us, 1),
                "ratio": round(result.ratio, 3),
                "baseline_us_per_update": {
                    name: round(seconds / result.updates * 1e6, 1)
                    for name, seconds in result.baseline_s.items()
                },
                "round_ratios": {
                    name: [round(r, 3) for r in ratios]
                    for name, ratios in result.round_ratios.items()
                },
                "pydantic_us_per_update": {k: round(v, 1) for k, v in result.pydantic_us.items()},
                "load_average": [round(value, 2) for value in os.getloadavg()],
                "steps_target": "PASS" if speed_ok else "MISS",
                "ratio_target": "PASS" if ratio_ok else "MISS",
                "python": platform.python_version(),
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ),
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sertakan-bench-") as tmp:
        data_dir = Path(tmp)
        runs = [f"sqlite+aiosqlite:///{(data_dir / 'bench.db').as_posix()}"]
        if args.database_url:
            if is_sqlite(args.database_url):
                print("--database-url is for an extra PostgreSQL run; SQLite always runs")
                return 2
            runs.append(args.database_url)
        for url in runs:
            try:
                result = await measure(
                    url,
                    data_dir,
                    users=args.users,
                    rounds=args.rounds,
                    warmup=args.warmup,
                    profile_path=args.profile if is_sqlite(url) else None,
                )
            except BenchBroken as exc:
                print(f"BROKEN RUN ({'sqlite' if is_sqlite(url) else url}): {exc}")
                return 1
            _report(result)
        if args.profile is not None:
            print(f"\ncProfile of our adapter's timed updates (SQLite) -> {args.profile}")
            stats = pstats.Stats(str(args.profile))
            stats.sort_stats("cumulative").print_stats(args.profile_lines)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300, help="people timed (default 300)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=20, help="people in the warm-up (default 20)")
    parser.add_argument(
        "--database-url",
        help="extra run on PostgreSQL, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/bench; "
        "its public schema is DROPPED first",
    )
    parser.add_argument("--profile", type=Path, help="cProfile our timed updates (SQLite) to FILE")
    parser.add_argument("--profile-lines", type=int, default=45)
    args = parser.parse_args(argv)
    if args.users < args.rounds or args.rounds < 1 or args.warmup < 0:
        parser.error("need --users >= --rounds >= 1 and --warmup >= 0")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
