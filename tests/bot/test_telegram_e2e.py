"""The Telegram channel end to end: aiogram over real HTTP to the fake Bot API, real engine and DB.

Nothing is mocked between the fake server and the database: the runtime is the
one `bot.app.build_runtime` builds, the channel is the production adapter, and
the database is the suite's (SQLite, or PostgreSQL with TEST_DATABASE_URL).
The one test double is `FailingOnce`, standing for a database that fails once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Runtime, build_runtime, seed_opds_if_empty
from bot.delivery import DeliverySettings
from bot.settings import (
    AppSettings,
    DatabaseSettings,
    ProgramSettings,
    Settings,
    TelegramSettings,
)
from bot.telegram import SECRET_HEADER, TelegramChannel, UpdateParking
from domain.vocabulary import Channel, Language, Occupation, PaymentPlan, SponsorshipStatus
from handlers.types import ConversationEngine, InboundEvent, QueuedReplies, Reply
from storage import telegram_inbound
from storage.crypto import NikCipher, decode_key, generate_key
from storage.db import create_engine
from storage.dead_letters import DeadLetters
from storage.models import (
    Asn,
    ChannelAccount,
    FailedUpdate,
    Opd,
    ProcessedUpdate,
    Sponsorship,
    TelegramInbound,
    Worker,
)
from storage.telegram_inbound import JournaledUpdate
from tests.fakes.chat import ASN_NIP, OPD_SEED, WORKER_NIK
from tests.fakes.clock import FrozenClock
from tests.fakes.telegram_api import FakeTelegramServer
from tests.fakes.telegram_user import TelegramUser, inline_buttons, watching

BUDI = 5500000001
SECRET = "e2e-webhook-secret_0123456789"
#: What the bot says once a sponsorship went to the OPD's queue (Dinas Kesehatan has no PIC here).
NOW_UTC = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
SUBMITTED = "sudah masuk, tetapi Dinas Kesehatan belum punya PIC"


# --- fixtures --------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def make_settings(
    tmp_path: Path, database_url: str, server: FakeTelegramServer, *, polling_timeout_s: int = 1
) -> Settings:
    """Every value the bot reads, given explicitly so no environment or .env leaks in."""
    return Settings(
        app=AppSettings(
            data_dir=tmp_path,
            nik_key=SecretStr(generate_key()),
            default_language=Language.INDONESIAN,
            timezone="Asia/Jakarta",
            opd_seed_file=OPD_SEED,
        ),
        database=DatabaseSettings(url=database_url, auto_migrate=False, echo=False),
        program=ProgramSettings(
            min_age=15, max_age=65, max_workers_per_asn=5, draft_idle_minutes=30
        ),
        telegram=TelegramSettings(
            token=SecretStr(server.token),
            api_base=server.base_url,
            polling_timeout_s=polling_timeout_s,
            webhook_secret=SecretStr(SECRET),
            webhook_path="/telegram/webhook",
        ),
    )


@pytest.fixture
async def settings(
    tmp_path: Path,
    database_url: str,
    server: FakeTelegramServer,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
    clock: FrozenClock,
) -> Settings:
    settings = make_settings(tmp_path, database_url, server)
    runtime = await build_runtime(settings, clock=clock, migrate=False)
    try:
        assert await seed_opds_if_empty(runtime) > 0
    finally:
        await runtime.close()
    return settings


@dataclasses.dataclass(slots=True)
class RunningBot:
    runtime: Runtime
    channel: TelegramChannel


@contextlib.asynccontextmanager
async def open_bot(
    settings: Settings,
    clock: FrozenClock,
    *,
    wrap: Callable[[ConversationEngine], ConversationEngine] | None = None,
    parking: Callable[[Runtime], UpdateParking] | None = None,
) -> AsyncIterator[RunningBot]:
    """A runtime and a channel on it, as `sertakan run` builds them; closed on exit."""
    runtime = await build_runtime(settings, clock=clock, migrate=False)
    engine: ConversationEngine = runtime.engine if wrap is None else wrap(runtime.engine)
    channel = TelegramChannel(
        engine,
        settings.telegram,
        clock,
        catalogs=runtime.catalogs,
        dead_letters=parking(runtime) if parking is not None else None,
        retry_first_s=0.01,
        retry_cap_s=0.05,
        database=runtime.db,
        cipher=runtime.cipher,
        delivery=DeliverySettings(
            retry_first=timedelta(milliseconds=10), retry_cap=timedelta(milliseconds=50)
        ),
    )
    try:
        with watching(channel.settled):
            yield RunningBot(runtime, channel)
        await asyncio.wait_for(channel.replies.drain(), 10)
    finally:
        await channel.close()
        await runtime.close()


@contextlib.asynccontextmanager
async def polling(channel: TelegramChannel) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(channel.run_polling(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# --- helpers ---------------------------------------------------------------------


async def register(user: TelegramUser) -> None:
    """PRODUCT 4.1 over Telegram, the same steps as `tests.fakes.chat.Chat.register`."""
    await user.say("/start")
    await user.press("Daftar sebagai ASN")
    await user.press("Setuju")
    await user.say(ASN_NIP)
    await user.say("Budi Santoso")
    await user.say("kesehatan")
    await user.press("Dinas Kesehatan")
    await user.share_contact("+6281234567890")
    await user.press("Konfirmasi")
    assert "Pendaftaran ASN berhasil" in user.text


async def enroll_until_nik(user: TelegramUser) -> None:
    await user.say("/daftar")
    await user.press("Bekerja untuk saya")
    await user.press("Asisten rumah tangga")
    await user.say("Siti Aminah")
    await user.say(WORKER_NIK)
    assert "Menurut NIK, tanggal lahir" in user.replies[-1].text


async def enroll_after_nik(user: TelegramUser) -> None:
    await user.press("Ya, benar")
    await enroll_after_birth_date(user)


async def enroll_after_birth_date(user: TelegramUser) -> None:
    """Place of birth, phone, address, plan and first month, up to the summary."""
    await user.say("Bogor")
    await user.say("081298765432")
    await user.say("Jl. Melati No. 5 RT 02/RW 01")
    await user.say("Sukamaju")
    await user.say("Ciawi")
    await user.say("Kabupaten Bogor")
    await user.press("Bulanan")
    await user.press("Desember 2026")
    assert "3201********0001" in user.replies[-1].text


async def count(sessionmaker: async_sessionmaker[AsyncSession], model: type[Any]) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def processed(sessionmaker: async_sessionmaker[AsyncSession], update_id: object) -> int:
    async with sessionmaker() as session:
        query = select(func.count()).where(
            ProcessedUpdate.channel == Channel.TELEGRAM,
            ProcessedUpdate.update_id == str(update_id),
        )
        return int(await session.scalar(query) or 0)


def long_polling(settings: Settings) -> Settings:
    """`settings` with a long poll (10 s) that is still waiting when the test queues updates."""
    return settings.model_copy(
        update={"telegram": settings.telegram.model_copy(update={"polling_timeout_s": 10})}
    )


def sent_texts(server: FakeTelegramServer, user_id: int) -> list[str]:
    return [message.text for message in server.messages_to(user_id)]


def callback_answers(server: FakeTelegramServer, update: dict[str, Any]) -> int:
    query_id = update["callback_query"]["id"]
    return sum(
        1
        for call in server.calls_of("answerCallbackQuery")
        if call.params.get("callback_query_id") == query_id
    )


# --- polling ---------------------------------------------------------------------


async def test_asn_registers_and_enrolls_a_worker_over_telegram(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    user = TelegramUser(server, BUDI)
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        await bot.channel.set_commands()
        await register(user)
        await enroll_until_nik(user)
        await enroll_after_nik(user)
        summary = user.replies[-1].text
        await user.press("Kirim ke PIC")
        assert SUBMITTED in user.text

    # The phone step asked with Telegram's share-contact button.
    [contact_request] = [
        m for m in server.messages_to(BUDI) if "keyboard" in (m.reply_markup or {})
    ]
    [[button]] = contact_request.reply_markup["keyboard"]  # type: ignore[index]
    assert button["request_contact"] is True
    # Plain text only: user input (names, addresses) is never parsed as markup.
    assert all(m.parse_mode is None for m in server.sent)
    assert "Rp16.800" in summary
    assert all(WORKER_NIK not in text for text in sent_texts(server, BUDI))
    assert {None, "en"} <= set(server.commands)

    key = decode_key(settings.app.nik_key.get_secret_value())  # type: ignore[union-attr]
    async with sessionmaker() as session:
        asn = (await session.execute(select(Asn))).scalar_one()
        account = await session.get_one(ChannelAccount, asn.channel_account_id)
        opd = await session.get_one(Opd, asn.opd_id)
        worker = (await session.execute(select(Worker))).scalar_one()
        sponsorship = (await session.execute(select(Sponsorship))).scalar_one()
    assert (asn.nip, asn.full_name, asn.phone_e164) == (ASN_NIP, "Budi Santoso", "+6281234567890")
    assert (account.channel, account.external_id) == (Channel.TELEGRAM, str(BUDI))
    assert opd.name.startswith("Dinas Kesehatan")
    assert worker.full_name == "Siti Aminah"
    assert worker.birth_date == date(1990, 8, 7)
    assert worker.nik_masked == "3201********0001"
    assert WORKER_NIK.encode() not in worker.nik_ciphertext
    assert NikCipher(key).decrypt(worker.nik_ciphertext) == WORKER_NIK
    assert (sponsorship.asn_id, sponsorship.worker_id) == (asn.id, worker.id)
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC
    assert sponsorship.occupation is Occupation.HOUSEHOLD_ASSISTANT
    assert sponsorship.plan is PaymentPlan.MONTHLY
    assert sponsorship.first_month == date(2026, 12, 1)


async def test_a_restart_mid_enrollment_continues_at_the_same_step(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    user = TelegramUser(server, BUDI)
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        await register(user)
        await enroll_until_nik(user)
    # Process gone: its HTTP session and database pool are closed.

    async with open_bot(settings, clock) as bot, polling(bot.channel):
        await user.press("Ya, benar")  # the button under the question asked before the restart
        assert "tempat lahir" in user.text
        await enroll_after_birth_date(user)
        await user.press("Kirim ke PIC")
        assert SUBMITTED in user.text

    assert await count(sessionmaker, Sponsorship) == 1
    async with sessionmaker() as session:
        worker = (await session.execute(select(Worker))).scalar_one()
    assert (worker.full_name, worker.birth_date) == ("Siti Aminah", date(1990, 8, 7))


# --- at-least-once delivery, exactly-once effect ----------------------------------


async def test_a_duplicated_update_in_one_batch_has_one_effect(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    user = TelegramUser(server, BUDI)
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        await register(user)
        await enroll_until_nik(user)
        await enroll_after_nik(user)
        submit = user.press_update("Kirim ke PIC")
        server.push_update(submit)  # Telegram delivering the same update twice
        await user.send(dict(submit))
        await server.wait_until(lambda: server.confirmed_offset > submit["update_id"])

    assert await count(sessionmaker, Sponsorship) == 1
    assert await processed(sessionmaker, submit["update_id"]) == 1
    assert sum(SUBMITTED in text for text in sent_texts(server, BUDI)) == 1


async def test_an_update_redelivered_after_a_crash_before_confirming_has_one_effect(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings = long_polling(settings)  # surely still waiting when the last update is queued
    user = TelegramUser(server, BUDI)
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        await register(user)
        await enroll_until_nik(user)
        await enroll_after_nik(user)
        # The bot commits the submission, then can never confirm it (it "crashes").
        server.fail_next("getUpdates", 1_000_000)
        submit = server.push_update(user.press_update("Kirim ke PIC"))
        await server.wait_until(lambda: any(SUBMITTED in t for t in sent_texts(server, BUDI)))
    assert server.confirmed_offset <= submit["update_id"]

    server.fail_next("getUpdates", 0)
    async with open_bot(settings, clock) as bot, polling(bot.channel):
        # The restarted bot is handed the unconfirmed update again.
        await server.wait_until(lambda: server.confirmed_offset > submit["update_id"])

    assert callback_answers(server, submit) == 2  # delivered twice...
    assert await count(sessionmaker, Sponsorship) == 1  # ...one effect
    assert await processed(sessionmaker, submit["update_id"]) == 1
    assert sum(SUBMITTED in text for text in sent_texts(server, BUDI)) == 1


class DatabaseDown(ConnectionRefusedError):
    """A failure that may heal (an OSError, like a refused database connection)."""


class FailingOnce:
    """Test double around the real engine: the first attempt at one update fails.

    It stands for a database that is down for a moment, and records the fake
    server's confirmed offset at every attempt at that update.
    """

    def __init__(self, server: FakeTelegramServer) -> None:
        self.server = server
        self.target: str | None = None
        self.offsets_at_attempts: list[int] = []
        self._engine: ConversationEngine | None = None

    def around(self, engine: ConversationEngine) -> ConversationEngine:
        self._engine = engine
        return self

    async def handle(self, event: InboundEvent) -> Sequence[Reply]:
        return (await self.handle_queued(event)).replies

    async def handle_queued(self, event: InboundEvent) -> QueuedReplies:
        assert self._engine is not None
        if event.update_id == self.target:
            self.offsets_at_attempts.append(self.server.confirmed_offset)
            if len(self.offsets_at_attempts) == 1:
                raise DatabaseDown("connection refused")
        return await self._engine.handle_queued(event)

    async def language_of(self, channel: Channel, sender_id: str) -> Language:
        assert self._engine is not None
        return await self._engine.language_of(channel, sender_id)


async def test_an_update_whose_step_failed_is_tried_again_from_the_journal(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    user = TelegramUser(server, BUDI)
    engine = FailingOnce(server)
    async with open_bot(settings, clock, wrap=engine.around) as bot, polling(bot.channel):
        await register(user)
        await enroll_until_nik(user)
        await enroll_after_nik(user)
        submit = user.press_update("Kirim ke PIC")
        engine.target = str(submit["update_id"])
        await user.send(submit)
        assert SUBMITTED in user.text

    update_id = submit["update_id"]
    # Confirmed to Telegram once journaled, then attempted twice from the journal.
    assert len(engine.offsets_at_attempts) == 2
    assert server.confirmed_offset > update_id
    assert callback_answers(server, submit) == 1  # the failed attempt delivered nothing
    assert await count(sessionmaker, Sponsorship) == 1
    assert await processed(sessionmaker, update_id) == 1
    assert sum(SUBMITTED in text for text in sent_texts(server, BUDI)) == 1


# --- webhook ---------------------------------------------------------------------


async def test_webhook_runs_the_real_engine_behind_the_secret(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    start = server.text_update(BUDI, "/start")
    path = settings.telegram.webhook_path
    async with open_bot(settings, clock) as bot:
        app = web.Application()
        bot.channel.webhook_routes(app)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            refused = await client.post(path, json=start, headers={SECRET_HEADER: "wrong"})
            assert refused.status == 401
            assert await count(sessionmaker, ProcessedUpdate) == 0
            assert server.sent == []

            accepted = await client.post(path, json=start, headers={SECRET_HEADER: SECRET})
            assert accepted.status == 200
            # Answered after the commit; the replies, stored with it, follow at once.
            await bot.channel.replies.drain()
            replies = server.messages_to(BUDI)
            assert replies[0].text.strip()
            buttons = [b["text"] for m in replies for b in inline_buttons(m)]
            assert any("Daftar sebagai ASN" in label for label in buttons)

            # Telegram retrying a delivered update: answered 200 again, no second effect.
            retried = await client.post(path, json=start, headers={SECRET_HEADER: SECRET})
            assert retried.status == 200
            await bot.channel.replies.drain()
    assert await processed(sessionmaker, start["update_id"]) == 1
    assert await count(sessionmaker, ChannelAccount) == 1
    assert server.messages_to(BUDI) == replies


# --- poison updates: parked after repeated failures, never dropped -----------------


class Poisoned:
    """Test double around the real engine: one chosen update fails on every attempt."""

    def __init__(self, update_id: int, failure: type[Exception] = DatabaseDown) -> None:
        """`failure`: what each attempt raises (one that may heal by default)."""
        self.update_id = str(update_id)
        self.failure = failure
        self.attempts = 0
        self._engine: ConversationEngine | None = None

    def around(self, engine: ConversationEngine) -> ConversationEngine:
        self._engine = engine
        return self

    async def handle(self, event: InboundEvent) -> Sequence[Reply]:
        return (await self.handle_queued(event)).replies

    async def handle_queued(self, event: InboundEvent) -> QueuedReplies:
        assert self._engine is not None
        if event.update_id == self.update_id:
            self.attempts += 1
            raise self.failure("this update fails every time")
        return await self._engine.handle_queued(event)

    async def language_of(self, channel: Channel, sender_id: str) -> Language:
        assert self._engine is not None
        return await self._engine.language_of(channel, sender_id)


def dead_letters(runtime: Runtime) -> UpdateParking:
    return DeadLetters(runtime.sessionmaker, runtime.cipher)


class ParkingDown:
    """A dead-letter store that cannot write (its database is down too)."""

    def __init__(self) -> None:
        self.calls = 0

    async def park(self, **fields: object) -> None:
        self.calls += 1
        raise DatabaseDown("cannot store the parked update")


POISON_ID = 900


async def test_a_poison_update_is_parked_encrypted_and_the_bot_moves_on(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings.telegram.max_update_attempts = 3
    poison = Poisoned(POISON_ID)
    other = 5512000002
    async with open_bot(settings, clock, wrap=poison.around, parking=dead_letters) as bot:
        poisoned = server.text_update(BUDI, WORKER_NIK)  # may hold a NIK: stored encrypted
        poisoned["update_id"] = POISON_ID
        server.push_update(poisoned)
        later = server.text_update(other, "/start")
        later["update_id"] = POISON_ID + 1
        server.push_update(later)
        async with polling(bot.channel):
            await server.wait_until(lambda: server.confirmed_offset > POISON_ID + 1, timeout=10)
        key = bot.runtime.cipher

    assert poison.attempts == 3
    async with sessionmaker() as session:
        (parked,) = (await session.execute(select(FailedUpdate))).scalars().all()
    assert (parked.update_id, parked.sender_id, parked.attempts) == (str(POISON_ID), str(BUDI), 3)
    assert parked.error_type == "DatabaseDown"
    assert WORKER_NIK.encode() not in parked.payload_ciphertext
    assert WORKER_NIK in key.decrypt_payload(parked.payload_ciphertext)
    [apology] = server.messages_to(BUDI)
    assert "belum bisa kami proses" in apology.text
    assert server.messages_to(other)[-1].text.startswith("Menu utama")  # not stalled


class StepBug(ValueError):
    """A failure that cannot heal: the same update fails the same way every time."""


async def test_an_update_failing_for_good_is_parked_at_once_and_holds_nobody(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Issue 11: a bug on one update used to be retried 5 times with back-off while
    everyone in the polling batch waited (p99 0.6 -> 8.2 s)."""
    poison = Poisoned(POISON_ID, failure=StepBug)
    other = 5512000002
    async with open_bot(settings, clock, wrap=poison.around, parking=dead_letters) as bot:
        poisoned = server.text_update(BUDI, "²")
        poisoned["update_id"] = POISON_ID
        server.push_update(poisoned)
        later = server.text_update(other, "/start")
        later["update_id"] = POISON_ID + 1
        server.push_update(later)
        async with polling(bot.channel):
            await server.wait_until(lambda: server.confirmed_offset > POISON_ID + 1, timeout=10)
            await bot.channel.replies.drain()

    assert poison.attempts == 1  # parked at the first failure, not retried
    async with sessionmaker() as session:
        (parked,) = (await session.execute(select(FailedUpdate))).scalars().all()
    assert (parked.update_id, parked.attempts, parked.error_type) == (str(POISON_ID), 1, "StepBug")
    [apology] = server.messages_to(BUDI)
    assert "belum bisa kami proses" in apology.text
    assert server.messages_to(other)[-1].text.startswith("Menu utama")


async def test_when_parking_fails_the_update_is_retried_not_dropped(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
) -> None:
    settings.telegram.max_update_attempts = 2
    poison = Poisoned(POISON_ID)
    store = ParkingDown()
    async with open_bot(settings, clock, wrap=poison.around, parking=lambda _: store) as bot:
        poisoned = server.text_update(BUDI, "halo")
        poisoned["update_id"] = POISON_ID
        server.push_update(poisoned)
        async with polling(bot.channel):
            await server.wait_until(lambda: store.calls >= 3, timeout=10)
        # Confirmed to Telegram, but its one durable copy, the journal's, is kept.
        async with bot.runtime.db.connect() as connection:
            left = await telegram_inbound.pending(connection, cipher=bot.runtime.cipher)
    assert [update.update_id for update in left] == [POISON_ID]
    assert server.messages_to(BUDI) == []


async def test_webhook_answers_500_until_the_update_is_parked(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings.telegram.max_update_attempts = 3
    poison = Poisoned(POISON_ID)
    update = server.text_update(BUDI, "halo")
    update["update_id"] = POISON_ID
    async with open_bot(settings, clock, wrap=poison.around, parking=dead_letters) as bot:
        app = web.Application()
        bot.channel.webhook_routes(app)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            statuses = []
            for _ in range(3):  # Telegram redelivers while we answer 500
                response = await client.post(
                    "/telegram/webhook", json=update, headers={SECRET_HEADER: SECRET}
                )
                statuses.append(response.status)
    assert statuses == [500, 500, 200]
    async with sessionmaker() as session:
        assert len((await session.execute(select(FailedUpdate))).scalars().all()) == 1
    assert "belum bisa kami proses" in server.messages_to(BUDI)[0].text


# --- the inbound journal: confirmed to Telegram before handling, never lost ----------


class Gate:
    """Test double around the real engine: holds chosen updates until they are let through,
    and records every attempt at every update (sender, update id) in order."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []
        self.held: dict[str, asyncio.Event] = {}
        self.waiting: set[str] = set()
        self._engine: ConversationEngine | None = None

    def around(self, engine: ConversationEngine) -> ConversationEngine:
        self._engine = engine
        return self

    def hold(self, update_id: object) -> asyncio.Event:
        return self.held.setdefault(str(update_id), asyncio.Event())

    def tries(self, update_id: object) -> int:
        return sum(1 for _, attempted in self.attempts if attempted == str(update_id))

    def order(self, sender: int) -> list[int]:
        return [int(update_id) for who, update_id in self.attempts if who == str(sender)]

    async def handle(self, event: InboundEvent) -> Sequence[Reply]:
        return (await self.handle_queued(event)).replies

    async def handle_queued(self, event: InboundEvent) -> QueuedReplies:
        assert self._engine is not None
        self.attempts.append((event.sender_id, event.update_id))
        gate = self.held.get(event.update_id)
        if gate is not None:
            self.waiting.add(event.update_id)
            await gate.wait()
        return await self._engine.handle_queued(event)

    async def language_of(self, channel: Channel, sender_id: str) -> Language:
        assert self._engine is not None
        return await self._engine.language_of(channel, sender_id)


async def journaled(runtime: Runtime) -> list[int]:
    async with runtime.db.connect() as connection:
        rows = await telegram_inbound.pending(connection, cipher=runtime.cipher)
    return [row.update_id for row in rows]


async def crash(task: asyncio.Task[None]) -> None:
    """Cancel the polling task where it stands, as a killed process stops."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_crash_after_the_offset_moved_loses_no_update(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    gate = Gate()
    start = server.text_update(BUDI, "/start")
    start["update_id"] = 700
    gate.hold(700)
    async with open_bot(settings, clock, wrap=gate.around) as bot:
        task = asyncio.create_task(bot.channel.run_polling())
        server.push_update(start)
        await server.wait_until(lambda: "700" in gate.waiting and server.confirmed_offset > 700)
        await crash(task)  # Telegram has forgotten the update; it was never handled
        assert await journaled(bot.runtime) == [700]
    assert await processed(sessionmaker, 700) == 0
    assert server.messages_to(BUDI) == []

    async with open_bot(settings, clock) as bot:
        async with polling(bot.channel):
            await server.wait_for_messages(BUDI, 1)
            await bot.channel.settled()
        assert await journaled(bot.runtime) == []
    assert await processed(sessionmaker, 700) == 1
    assert await count(sessionmaker, ChannelAccount) == 1


async def test_one_persons_updates_stay_in_order_while_others_and_the_poller_go_on(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
) -> None:
    siti = 5500000002
    gate = Gate()
    first, second = (server.text_update(BUDI, text) for text in ("/start", "/menu"))
    first["update_id"], second["update_id"] = 710, 711
    released = gate.hold(710)
    async with open_bot(settings, clock, wrap=gate.around) as bot, polling(bot.channel):
        server.push_update(first)
        server.push_update(second)
        server.push_update(server.text_update(siti, "/start"))
        await server.wait_until(lambda: "710" in gate.waiting)
        await server.wait_for_messages(siti, 1)
        # While Budi's first update is held, a later update of Siti's is fetched and
        # answered: the poller does not wait for the slowest person of a batch.
        later = server.push_update(server.text_update(siti, "/menu"))
        await server.wait_for_messages(siti, 2)
        assert server.confirmed_offset > later["update_id"]
        assert gate.order(BUDI) == [710]  # his second waits behind his first
        assert server.messages_to(BUDI) == []
        released.set()
        await server.wait_for_messages(BUDI, 2)
        await bot.channel.settled()
        assert await journaled(bot.runtime) == []
    assert gate.order(BUDI) == [710, 711]


async def test_an_update_delivered_again_while_journaled_is_handled_once(
    server: FakeTelegramServer,
    settings: Settings,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings = long_polling(settings)  # surely still waiting when the update is queued
    start = server.text_update(BUDI, "/start")
    start["update_id"] = 720
    gate = Gate()
    gate.hold(720)
    async with open_bot(settings, clock, wrap=gate.around) as bot:
        task = asyncio.create_task(bot.channel.run_polling())
        await server.wait_until(lambda: bool(server.calls_of("deleteWebhook")))
        await asyncio.sleep(0.3)  # the first long poll is waiting by now
        # The waiting long poll returns the update; the next fetch, its confirmation, fails.
        server.fail_next("getUpdates", 1_000_000)
        server.push_update(start)
        await server.wait_until(lambda: "720" in gate.waiting)
        await crash(task)
    assert server.confirmed_offset <= 720

    server.fail_next("getUpdates", 0)
    gate = Gate()
    # Held until Telegram delivered it again (and the journal found it there).
    redelivered = gate.hold(720)
    async with open_bot(settings, clock, wrap=gate.around) as bot, polling(bot.channel):
        await server.wait_until(lambda: "720" in gate.waiting)
        await server.wait_until(lambda: server.confirmed_offset > 720)
        redelivered.set()
        await server.wait_for_messages(BUDI, 1)
        await bot.channel.settled()
    assert gate.tries(720) == 1
    assert await processed(sessionmaker, 720) == 1
    assert sum("Selamat datang" in text for text in sent_texts(server, BUDI)) == 1


async def test_the_journal_keeps_one_encrypted_row_per_update(database_url: str) -> None:
    cipher = NikCipher(decode_key(generate_key()))
    database = create_engine(database_url)
    payload = f'{{"update_id": 731, "message": {{"text": "{WORKER_NIK}"}}}}'
    try:
        async with database.begin() as connection:
            first = await telegram_inbound.record(
                connection,
                [JournaledUpdate(731, payload), JournaledUpdate(730, "{}")],
                cipher=cipher,
                now=NOW_UTC,
            )
            again = await telegram_inbound.record(
                connection,
                [JournaledUpdate(731, payload), JournaledUpdate(731, payload)],
                cipher=cipher,
                now=NOW_UTC,
            )
            stored = await connection.scalar(
                select(TelegramInbound.payload_ciphertext).where(TelegramInbound.update_id == 731)
            )
            assert [
                u.update_id for u in await telegram_inbound.pending(connection, cipher=cipher)
            ] == [730, 731]
            assert (await telegram_inbound.pending(connection, cipher=cipher))[1].payload == payload
            assert await telegram_inbound.forget(connection, [730, 731, 999]) == 2
            assert await telegram_inbound.pending(connection, cipher=cipher) == []
    finally:
        await database.dispose()
    assert first == {730, 731}
    assert again == set()
    assert stored is not None and WORKER_NIK.encode() not in stored
