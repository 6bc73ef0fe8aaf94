"""The journal's consumer: webhook (HTTP, 127.0.0.1) -> journal -> processor -> engine -> replies.

Replies go to a recording sink (rendering them for WhatsApp is the outbound
side's job); media comes from a fake fetcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.delivery import DeliverySettings, ReplyDelivery
from bot.settings import WhatsAppSettings
from bot.whatsapp.events import to_event
from bot.whatsapp.processor import InboundProcessor, ProcessorSettings
from bot.whatsapp.webhook import SIGNATURE_HEADER, WhatsAppWebhook
from domain.vocabulary import Channel, Language
from handlers.i18n import Catalogs
from handlers.types import (
    ConversationEngine,
    EventKind,
    InboundEvent,
    Option,
    QueuedReplies,
    Reply,
)
from scheduler.sending import SendResult, Sent, Transient
from storage.crypto import NikCipher
from storage.dead_letters import DeadLetters
from storage.models import Asn, FailedUpdate, WhatsappInbound
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.chat import ASN_NIP, TEST_KEY, WORKER_NIK, Chat, build_engine, seed_opds
from tests.fakes.clock import FrozenClock
from tests.fakes.whatsapp_payloads import APP_SECRET, BUDI, RINA, SITI, VERIFY_TOKEN, WaUser
from tests.handlers.test_erasure import WORKER_TRACES, tables_quoting

CIPHER = NikCipher(TEST_KEY)
CATALOGS = Catalogs()
PARKED_TEXT = CATALOGS.translator(Language.INDONESIAN)("input.update_parked")


@dataclasses.dataclass
class Delivery:
    recipient: str
    replies: list[Reply]
    language: Language


class RecordingSink:
    """Stands in for the WhatsApp rendering (a `bot.delivery.ReplyTransport`): each
    reply is one message; keeps what was sent, to whom. With `fail` set every send
    is refused as Meta's servers would when away (transient)."""

    channel = Channel.WHATSAPP
    channel_wide_rate_limit = True

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.fail = False
        self.refused = 0
        self.arrived = asyncio.Event()

    def render(self, replies: Sequence[Reply], language: Language) -> list[tuple[Reply, Language]]:
        return [(reply, language) for reply in replies]

    async def send(self, chat_id: str, part: tuple[Reply, Language]) -> SendResult:
        if self.fail:
            self.refused += 1
            return Transient("graph api unreachable")
        reply, language = part
        self.deliveries.append(Delivery(chat_id, [reply], language))
        self.arrived.set()
        return Sent()

    def texts_to(self, recipient: str) -> list[str]:
        return [r.text for d in self.deliveries if d.recipient == recipient for r in d.replies]


class FakeMedia:
    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = files or {}
        self.calls: list[tuple[str, int]] = []
        self.fail = 0

    async def fetch(self, media_id: str, max_bytes: int) -> bytes | None:
        self.calls.append((media_id, max_bytes))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("media download failed")
        content = self.files[media_id]
        return None if len(content) > max_bytes else content


class ScriptedEngine:
    """A `ConversationEngine` that records events in the order it gets them."""

    def __init__(self) -> None:
        self.events: list[InboundEvent] = []
        self.fail: dict[str, int] = {}  # update id -> failures still to come (-1: always)
        #: Update ids whose step has a bug: it fails the same way every time.
        self.bug: set[str] = set()

    async def handle(self, event: InboundEvent) -> Sequence[Reply]:
        for _ in range(3):  # give other senders' chains a chance to interleave
            await asyncio.sleep(0)
        if event.update_id in self.bug:
            raise ValueError("a step that cannot handle this message")
        remaining = self.fail.get(event.update_id, 0)
        if remaining:
            self.fail[event.update_id] = remaining - 1 if remaining > 0 else -1
            raise ConnectionRefusedError("database down")  # a failure that may heal
        self.events.append(event)
        return [Reply(f"ok {event.text}")]

    async def handle_queued(self, event: InboundEvent) -> QueuedReplies:
        return QueuedReplies(await self.handle(event), Language.INDONESIAN)

    async def language_of(self, channel: Channel, sender_id: str) -> Language:
        return Language.INDONESIAN

    def texts_of(self, sender: WaUser) -> list[str | None]:
        return [e.text for e in self.events if e.sender_id == sender.sender_id]


@dataclasses.dataclass
class Rig:
    client: TestClient[web.Request, web.Application]
    processor: InboundProcessor
    sink: RecordingSink
    media: FakeMedia
    clock: FrozenClock
    database: AsyncEngine
    delivery: ReplyDelivery

    async def post(self, *incoming: wa.Incoming) -> None:
        body = wa.encode(wa.webhook(*incoming))
        response = await self.client.post(
            "/whatsapp/webhook", data=body, headers={SIGNATURE_HEADER: wa.sign(body)}
        )
        assert response.status == 200

    async def drain(self) -> None:
        """Process everything that is due now, and wait until the replies went out."""
        while await self.processor.drain_once():
            pass
        if not self.sink.fail:
            await asyncio.wait_for(self.delivery.drain(), 10)

    async def retry_later(self, times: int = 1) -> None:
        """Let back-offs pass and process again, `times` times."""
        for _ in range(times):
            self.clock.advance(timedelta(minutes=10))
            await self.drain()


@contextlib.asynccontextmanager
async def rig(
    database: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: ConversationEngine | None = None,
    *,
    clock: FrozenClock | None = None,
    **settings: Any,
) -> AsyncIterator[Rig]:
    clock = clock or FrozenClock()
    sink, media = RecordingSink(), FakeMedia()
    delivery = ReplyDelivery(
        sink,
        database=database,
        cipher=CIPHER,
        clock=clock,
        settings=DeliverySettings(retry_first=timedelta(milliseconds=10)),
    )
    processor = InboundProcessor(
        database=database,
        engine=engine or build_engine(sessionmaker, clock),
        cipher=CIPHER,
        replies=delivery,
        media=media,
        parking=DeadLetters(sessionmaker, CIPHER),
        catalogs=CATALOGS,
        clock=clock,
        settings=ProcessorSettings(**settings),
    )
    whatsapp = WhatsAppSettings(
        app_secret=SecretStr(APP_SECRET), verify_token=SecretStr(VERIFY_TOKEN)
    )
    app = web.Application()
    WhatsAppWebhook(whatsapp, database, CIPHER, clock, wake=processor.wake).routes(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        try:
            yield Rig(client, processor, sink, media, clock, database, delivery)
        finally:
            await delivery.close()


class WaChat:
    """A person on WhatsApp: posts webhook payloads and reads what the sink got for them."""

    def __init__(self, rig: Rig, user: WaUser) -> None:
        self.rig = rig
        self.user = user
        self.replies: list[Reply] = []
        self.options: tuple[Option, ...] = ()

    async def _send(self, incoming: wa.Incoming) -> list[Reply]:
        before = len(self.rig.sink.deliveries)
        await self.rig.post(incoming)
        await self.rig.drain()
        self.replies = [
            reply
            for delivery in self.rig.sink.deliveries[before:]
            if delivery.recipient == self.user.sender_id
            for reply in delivery.replies
        ]
        for reply in self.replies:
            if reply.options:
                self.options = reply.options
        return self.replies

    @property
    def text(self) -> str:
        return "\n".join(reply.text for reply in self.replies)

    async def say(self, text: str) -> list[Reply]:
        return await self._send(wa.text(self.user, text))

    async def press(self, label_part: str) -> list[Reply]:
        wanted = label_part.casefold()
        matches = [o for o in self.options if wanted in o.label.casefold()]
        if len(matches) > 1:
            matches = [
                o for o in matches if re.sub(r"^\W+", "", o.label.casefold()).startswith(wanted)
            ]
        assert len(matches) == 1, f"{label_part!r} in {[o.label for o in self.options]}"
        return await self._send(wa.button_reply(self.user, matches[0].id, matches[0].label[:20]))


# --- with the real engine ---------------------------------------------------------------


async def test_a_registration_fed_as_whatsapp_payloads_works_and_takes_the_senders_number(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    async with rig(db_engine, sessionmaker, clock=clock) as r:
        budi = WaChat(r, BUDI)
        await budi.say("/start")
        await budi.press("Daftar sebagai ASN")
        await budi.press("Setuju")
        await budi.say(ASN_NIP)
        await budi.say("Budi Santoso")
        await budi.say("kesehatan")
        await budi.press("Dinas Kesehatan")
        await budi.press("Konfirmasi")
        assert "Pendaftaran ASN berhasil" in budi.text
    async with sessionmaker() as session:
        asn = (await session.execute(select(Asn))).scalar_one()
    assert (asn.nip, asn.phone_e164) == (ASN_NIP, "+6285298765432")
    async with db_engine.connect() as connection:
        open_rows = await connection.scalar(
            select(WhatsappInbound.id).where(WhatsappInbound.processed_at.is_(None)).limit(1)
        )
    assert open_rows is None
    assert {d.language for d in r.sink.deliveries} == {Language.INDONESIAN}


async def test_a_message_replayed_after_the_engine_committed_brings_no_second_reply(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A crash between the engine's commit and `mark_processed`: the replay is a no-op."""
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    engine = build_engine(sessionmaker, clock)
    async with rig(db_engine, sessionmaker, engine, clock=clock) as r:
        incoming = wa.text(SITI, "/start")
        await r.post(incoming)
        async with db_engine.connect() as connection:
            row = (await connection.execute(select(WhatsappInbound))).one()
        # The first process ran the engine, then died before marking the row.
        event = to_event(
            row.message_id, CIPHER.decrypt_payload(row.payload_ciphertext), received_at=clock()
        )
        assert event is not None and await engine.handle(event)
        await r.drain()
        assert r.sink.deliveries == []
    async with db_engine.connect() as connection:
        assert await connection.scalar(select(WhatsappInbound.processed_at)) is not None


# --- ordering, retries, parking (scripted engine) -----------------------------------------


async def test_each_senders_messages_reach_the_engine_in_order(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    engine = ScriptedEngine()
    async with rig(db_engine, sessionmaker, engine) as r:
        await r.post(wa.text(SITI, "s1"), wa.text(BUDI, "b1"), wa.text(SITI, "s2"))
        await r.post(wa.text(RINA, "r1"), wa.text(SITI, "s3"), wa.text(BUDI, "b2"))
        await r.post(wa.text(SITI, "s4"))
        await r.drain()
    assert engine.texts_of(SITI) == ["s1", "s2", "s3", "s4"]
    assert engine.texts_of(BUDI) == ["b1", "b2"]
    assert engine.texts_of(RINA) == ["r1"]
    assert r.sink.texts_to(SITI.sender_id) == ["ok s1", "ok s2", "ok s3", "ok s4"]
    assert r.sink.texts_to(RINA.user_id) == ["ok r1"]  # the number is hidden: the user id


async def test_a_message_arriving_after_a_later_one_was_handled_reaches_the_engine_as_such(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    engine = ScriptedEngine()
    async with rig(db_engine, sessionmaker, engine) as bot:
        typed = bot.clock() - timedelta(seconds=20)
        await bot.post(wa.text(SITI, "kedua", at=typed + timedelta(seconds=1)))
        await bot.drain()
        await bot.post(wa.text(SITI, "pertama", at=typed))
        await bot.drain()
    assert [(e.text, e.out_of_order) for e in engine.events] == [
        ("kedua", False),
        ("pertama", True),
    ]


async def test_a_failed_message_holds_its_senders_later_messages_but_not_others(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    engine = ScriptedEngine()
    first = wa.text(SITI, "s1")
    engine.fail[first.id] = 1
    async with rig(db_engine, sessionmaker, engine) as r:
        await r.post(first, wa.text(BUDI, "b1"), wa.text(SITI, "s2"))
        await r.drain()
        assert engine.texts_of(SITI) == []
        assert engine.texts_of(BUDI) == ["b1"]
        await r.post(wa.text(SITI, "s3"))
        await r.drain()
        assert engine.texts_of(SITI) == []  # still waiting for s1's retry
        await r.retry_later()
    assert engine.texts_of(SITI) == ["s1", "s2", "s3"]


async def test_a_message_failing_for_good_is_parked_at_once_and_the_rest_go_on(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Issue 11: a bug is not retried (each retry held the person's later messages)."""
    engine = ScriptedEngine()
    broken = wa.text(SITI, "²")
    engine.bug.add(broken.id)
    async with rig(db_engine, sessionmaker, engine, max_attempts=5) as r:
        await r.post(broken, wa.text(SITI, "after"))
        await r.drain()
    assert engine.texts_of(SITI) == ["after"]  # no retry needed for the next one to go
    assert r.sink.texts_to(SITI.sender_id) == [PARKED_TEXT, "ok after"]
    async with sessionmaker() as session:
        parked = (await session.execute(select(FailedUpdate))).scalar_one()
    assert (parked.update_id, parked.attempts, parked.error_type) == (broken.id, 1, "ValueError")


async def test_a_message_failing_every_time_is_parked_the_person_told_and_the_rest_go_on(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    engine = ScriptedEngine()
    broken = wa.text(SITI, f"NIK {WORKER_NIK}")
    engine.fail[broken.id] = -1
    async with rig(db_engine, sessionmaker, engine, max_attempts=3) as r:
        await r.post(broken, wa.text(SITI, "after"))
        await r.drain()
        await r.retry_later(times=2)
        assert engine.texts_of(SITI) == ["after"]
        await r.retry_later(times=2)  # parked: never tried again
    assert engine.texts_of(SITI) == ["after"]
    assert r.sink.texts_to(SITI.sender_id) == [PARKED_TEXT, "ok after"]
    async with sessionmaker() as session:
        parked = (await session.execute(select(FailedUpdate))).scalar_one()
    assert (parked.channel, parked.update_id, parked.sender_id, parked.attempts) == (
        Channel.WHATSAPP,
        broken.id,
        SITI.sender_id,
        3,
    )
    assert WORKER_NIK.encode() not in parked.payload_ciphertext
    assert WORKER_NIK in CIPHER.decrypt_payload(parked.payload_ciphertext)
    async with db_engine.connect() as connection:
        row = (
            await connection.execute(
                select(WhatsappInbound).where(WhatsappInbound.message_id == broken.id)
            )
        ).one()
    assert (row.attempts, row.last_error, row.processed_at is not None) == (
        3,
        "ConnectionRefusedError",
        True,
    )


async def test_a_document_is_fetched_before_the_engine_and_too_large_is_said(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    engine = ScriptedEngine()
    async with rig(db_engine, sessionmaker, engine, max_file_bytes=1000) as r:
        r.media.files = {"m-small": b"PK\x03\x04 kpj", "m-big": b"x" * 1001}
        r.media.fail = 1  # the first download fails: retried like an engine failure
        await r.post(wa.document(SITI, media_id="m-small", filename="kpj.xlsx"))
        await r.post(wa.document(SITI, media_id="m-big", filename="besar.xlsx"))
        await r.drain()
        assert engine.events == []
        await r.retry_later()
    small, big = engine.events
    assert (small.kind, small.file_name, small.file_content, small.file_too_large) == (
        EventKind.DOCUMENT,
        "kpj.xlsx",
        b"PK\x03\x04 kpj",
        False,
    )
    assert (big.file_content, big.file_too_large) == (None, True)
    assert r.media.calls == [("m-small", 1000), ("m-small", 1000), ("m-big", 1000)]


async def test_replies_that_cannot_be_delivered_do_not_replay_the_message(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    engine = ScriptedEngine()
    async with rig(db_engine, sessionmaker, engine) as r:
        r.sink.fail = True
        await r.post(wa.text(SITI, "halo"))
        await r.drain()
        await r.retry_later()
    assert engine.texts_of(SITI) == ["halo"]  # handled once; the step is committed


async def test_reactions_never_reach_the_engine(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    engine = ScriptedEngine()
    async with rig(db_engine, sessionmaker, engine) as r:
        await r.post(wa.reaction(SITI, wa.message_id()), wa.sticker(SITI))
        await r.drain()
    assert [e.kind for e in engine.events] == [EventKind.UNSUPPORTED]


async def test_run_handles_what_the_webhook_records_until_stopped(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    engine = ScriptedEngine()
    async with rig(db_engine, sessionmaker, engine, idle_s=60.0) as r:
        stop = asyncio.Event()
        runner = asyncio.create_task(r.processor.run(stop))
        try:
            await r.post(wa.text(SITI, "halo"))
            # The webhook's wake, not the 60 s poll, brings it to the engine.
            await asyncio.wait_for(r.sink.arrived.wait(), timeout=30)
        finally:
            stop.set()
            await asyncio.wait_for(runner, timeout=30)
    assert engine.texts_of(SITI) == ["halo"]


@pytest.mark.parametrize("sender", [SITI, RINA], ids=["number", "hidden number"])
async def test_the_engine_gets_the_senders_phone_only_when_whatsapp_shares_it(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], sender: WaUser
) -> None:
    engine = ScriptedEngine()
    async with rig(db_engine, sessionmaker, engine) as r:
        await r.post(wa.text(sender, "halo"))
        await r.drain()
    [event] = engine.events
    expected = f"+{sender.wa_id}" if sender.wa_id else None
    assert (event.sender_id, event.sender_phone) == (sender.sender_id, expected)


async def test_hapus_fed_as_whatsapp_payloads_leaves_no_trace_of_the_worker(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The journal rows of the erasing conversation itself go too, and the processor keeps
    its claims (the row in hand is marked handled, numberless)."""
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    engine = build_engine(sessionmaker, clock, worker_channel=Channel.WHATSAPP)
    asn = Chat(engine, clock)
    await asn.register()
    await asn.enroll_until_summary()  # the worker's phone: 0812 9876 5432
    await asn.press("Kirim ke PIC")
    worker = WaUser(wa_id="6281298765432", user_id="ID.5550001112223", name="Siti Aminah")
    async with rig(db_engine, sessionmaker, engine, clock=clock) as r:
        siti = WaChat(r, worker)
        await siti.say("hapus")
        await siti.press("Ya, hapus")
        assert "Data Anda sudah dihapus" in siti.text
    traces = (*WORKER_TRACES, worker.user_id)
    assert await tables_quoting(sessionmaker, traces) == []
    async with db_engine.connect() as connection:
        journal = (await connection.execute(select(WhatsappInbound))).all()
    # "hapus" was handled before the erasure (deleted); the confirmation was in hand.
    assert [(row.sender_id, row.processed_at is not None) for row in journal] == [
        ("[dihapus]", True)
    ]
