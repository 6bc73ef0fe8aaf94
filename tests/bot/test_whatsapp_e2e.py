"""WhatsApp end to end over real HTTP, wired as `sertakan run` wires it.

Signed webhook bodies in Meta's current format (contacts[].wa_id and user_id)
are POSTed to our running web server (aiohttp on 127.0.0.1); the journal, the
processor, the engine, the database, the outbox and the dispatcher do the
rest, and every Graph API call goes over HTTP to a local fake
(`tests/fakes/graph_api.py`) that enforces Meta's limits: free text only
inside a person's 24-hour window (131047 otherwise), approved templates only,
interactive limits, and, where a test asks, rate limits.

An ASN registers and enrolls two workers over WhatsApp; each worker is asked
for consent by template (they never wrote) and answers with its button; the
PIC (appointed by phone) accepts, exports, confirms and imports the KPJ file;
a day later the worker who wrote again gets the card-ready notice as free
text, the other as a template. Plus: a 130429 storm, duplicate webhooks, the
process itself (`python -m bot run`) answering Meta's handshake and a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Runtime, build_background, build_runtime, seed_opds_if_empty
from bot.settings import (
    AppSettings,
    DatabaseSettings,
    DispatcherSettings,
    Settings,
    TelegramSettings,
)
from bot.whatsapp.channel import WhatsAppChannel, build_whatsapp
from bot.whatsapp.sender import WhatsAppSender
from bot.whatsapp.templates import load_templates
from domain.vocabulary import (
    Channel,
    DeliveryStatus,
    OutboxStatus,
    SponsorshipStatus,
    WorkerConsent,
)
from scheduler.dispatcher import Dispatcher
from storage.audit import Actor
from storage.models import Opd, Outbox, Sponsorship, WhatsappInbound
from storage.outbox import Notice, enqueue
from storage.roles import appoint
from tests.bot.test_cli_run import START_WITHIN_S, _free_port, _run, _stop
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.chat import OPD_SEED, OTHER_NIK, TEST_KEY, WORKER_NIK
from tests.fakes.clock import FrozenClock
from tests.fakes.graph_api import SHIPPED_TEMPLATES, FakeGraphServer, SentWhatsApp
from tests.fakes.whatsapp_payloads import APP_SECRET, VERIFY_TOKEN, WaUser

BUDI = WaUser(wa_id="6285298765432", user_id="ID.9983736251403921", name="Budi Santoso")
PIC = WaUser(wa_id="6281355550000", user_id="ID.1029384756102938", name="Pak PIC")
SITI = WaUser(wa_id="6281298765432", user_id="ID.1402837465019283", name="Siti Aminah")
JOKO = WaUser(wa_id="6281311112222", user_id="ID.7766554433221100", name="Joko Susilo")


def make_settings(
    data_dir: Path, database_url: str, graph: FakeGraphServer, **dispatch: object
) -> Settings:
    import base64

    return Settings(
        app=AppSettings(
            data_dir=data_dir,
            nik_key=SecretStr(base64.urlsafe_b64encode(TEST_KEY).decode()),
            timezone="Asia/Jakarta",
            opd_seed_file=OPD_SEED,
        ),
        database=DatabaseSettings(url=database_url, auto_migrate=False),
        telegram=TelegramSettings(token=None),
        whatsapp=graph.settings(
            app_secret=SecretStr(APP_SECRET),
            verify_token=SecretStr(VERIFY_TOKEN),
            templates_file=SHIPPED_TEMPLATES,
            # `Bot.deliver` drains right after the post on a frozen clock; the hold
            # has its own end-to-end test (test_whatsapp_ordering.py).
            order_hold_s=0,
        ),
        # Tests do not wait Meta's 6 s between two messages to one person.
        dispatch=DispatcherSettings(whatsapp_chat_interval_s=0, **dispatch),  # type: ignore[arg-type]
    )


@dataclasses.dataclass
class Bot:
    """The running WhatsApp side of one bot process, with its web server on 127.0.0.1."""

    runtime: Runtime
    channel: WhatsAppChannel
    dispatcher: Dispatcher
    graph: FakeGraphServer
    url: str
    http: aiohttp.ClientSession

    async def post(self, body: bytes, *, signature: str | None = None) -> int:
        headers = {"Content-Type": "application/json"}
        headers["X-Hub-Signature-256"] = signature or wa.sign(body)
        async with self.http.post(self.url, data=body, headers=headers) as response:
            return response.status

    async def deliver(self, *incoming: wa.Incoming) -> None:
        """Meta posts these messages; the processor handles them (and sends the replies)."""
        for item in incoming:
            if item.user.wa_id is not None:
                self.graph.open_window(item.user.wa_id)
        assert await self.post(wa.encode(wa.webhook(*incoming))) == 200
        while await self.channel.processor.drain_once():
            pass
        await asyncio.wait_for(self.channel.replies.drain(), 10)

    async def dispatch(self) -> None:
        """Run dispatcher ticks until the outbox has nothing due."""
        while await self.dispatcher.tick():
            pass


@contextlib.asynccontextmanager
async def running(
    settings: Settings, graph: FakeGraphServer, clock: FrozenClock
) -> AsyncIterator[Bot]:
    runtime = await build_runtime(settings, clock=clock, migrate=False)
    channel = build_whatsapp(runtime)
    _, dispatcher = build_background(runtime, {Channel.WHATSAPP: channel.sender})
    app = web.Application()
    channel.routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            yield Bot(
                runtime,
                channel,
                dispatcher,
                graph,
                f"http://127.0.0.1:{port}{settings.whatsapp.webhook_path}",
                http,
            )
    finally:
        await dispatcher.stop()
        await runner.cleanup()
        await channel.close()
        await runtime.close()


def bare(title: str) -> str:
    """A title without its leading emoji and spaces."""
    return re.sub(r"^\W+", "", title.casefold())


class Person:
    """Someone on WhatsApp: types, presses what our last message to them offered."""

    def __init__(self, bot: Bot, user: WaUser) -> None:
        self.bot = bot
        self.user = user

    @property
    def inbox(self) -> list[SentWhatsApp]:
        assert self.user.wa_id is not None
        return self.bot.graph.messages_to(self.user.wa_id)

    @property
    def text(self) -> str:
        return "\n".join(message.text for message in self.inbox)

    async def say(self, body: str) -> None:
        await self.bot.deliver(wa.text(self.user, body, at=self.bot.runtime.clock()))

    async def press(self, label: str) -> None:
        """Press the button or list row whose title contains `label` in the latest choices."""
        offered = [m for m in self.inbox if m.choices][-1]
        wanted = label.casefold()
        matches = [(i, t) for i, t in offered.choices if wanted in t.casefold()]
        if len(matches) > 1:  # "Setuju" vs "Tidak setuju": the title that starts with it
            matches = [(i, t) for i, t in matches if bare(t).startswith(wanted)]
        assert len(matches) == 1, f"{label!r} in {offered.choices}"
        option_id, title = matches[0]
        if offered.interactive_type == "button":
            await self.bot.deliver(
                wa.button_reply(self.user, option_id, title, at=self.bot.runtime.clock())
            )
        else:
            await self.bot.deliver(
                wa.list_reply(self.user, option_id, title, at=self.bot.runtime.clock())
            )


async def seed(settings: Settings) -> None:
    """The OPD list, and the PIC of Dinas Kesehatan appointed by phone."""
    runtime = await build_runtime(settings, clock=FrozenClock(), migrate=False)
    try:
        await seed_opds_if_empty(runtime)
        async with runtime.db.begin() as connection:
            opd_id = (
                await connection.execute(select(Opd.id).where(Opd.code == "BKL-DINKES"))
            ).scalar_one()
            await appoint(
                connection,
                opd_id=opd_id,
                channel=None,
                external_id=None,
                phone_e164="+" + str(PIC.wa_id),
                actor=Actor.admin("test"),
                now=FrozenClock()(),
            )
    finally:
        await runtime.close()


async def register(budi: Person) -> None:
    await budi.say("halo")
    assert "Nomor ini belum kami kenal" in budi.text
    await budi.press("Daftar")
    await budi.press("Setuju")
    await budi.say("198503122010011002")
    await budi.say("Jl. Melati No. 5 RT 02/RW 01")
    await budi.say("Budi Santoso")
    await budi.say("kesehatan")
    await budi.press("Dinas Kesehatan")
    # No phone question on WhatsApp: the summary shows the sender's number.
    assert "Nomor HP: 0852-9876-5432" in budi.inbox[-1].text
    await budi.press("Konfirmasi")
    assert "Budi Santoso" in budi.inbox[-2].text or "Budi Santoso" in budi.text


async def enroll(budi: Person, nik: str, name: str, phone: str) -> None:
    await budi.say("daftar")
    await budi.press("Bekerja untuk saya")
    await budi.press("Asisten rumah tangga")
    await budi.say(name)
    await budi.say(nik)
    await budi.press("Ya, benar")
    for answer in ("Bogor", phone, "Jl. Melati No. 5", "Sukamaju", "Ciawi", "Kabupaten Bogor"):
        await budi.say(answer)
    await budi.press("Bulanan")
    await budi.press("Desember 2026")
    await budi.press("Kirim ke PIC")
    assert "sudah masuk, tetapi Dinas Kesehatan belum punya PIC" in budi.text


async def test_from_whatsapp_registration_to_card_ready_by_template_and_free_text(
    tmp_path: Path,
    database_url: str,
    graph: FakeGraphServer,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
) -> None:
    settings = make_settings(tmp_path, database_url, graph)
    await seed(settings)
    clock = FrozenClock()  # Saturday 10:00 in Jakarta: outside quiet hours
    async with running(settings, graph, clock) as bot:
        budi, pic = Person(bot, BUDI), Person(bot, PIC)
        siti, joko = Person(bot, SITI), Person(bot, JOKO)
        await register(budi)
        await enroll(budi, WORKER_NIK, "Siti Aminah", "081298765432")
        await enroll(budi, OTHER_NIK, "Joko Susilo", "081311112222")

        # The consent requests: templates, since neither worker ever wrote to us.
        await bot.dispatch()
        for worker, name in ((siti, "Siti Aminah"), (joko, "Joko Susilo")):
            (request,) = worker.inbox
            assert request.type == "template"
            assert name in request.template_params
            assert "Budi Santoso" in request.template_params
            yes, no = request.template_payloads
            assert yes.startswith("consent:yes:") and no.startswith("consent:no:")
            await bot.deliver(wa.quick_reply(worker.user, yes, "YA"))
            assert "Persetujuan Anda sudah dicatat" in worker.inbox[-2].text
        async with sessionmaker() as session:
            consents = (await session.execute(select(Sponsorship.worker_consent))).scalars().all()
        assert consents == [WorkerConsent.GIVEN, WorkerConsent.GIVEN]
        # The ASN is told (inside his window: free text).
        await bot.dispatch()
        assert budi.text.count("menyetujui pendaftarannya") == 2

        # The PIC, appointed by phone, is recognised by the number WhatsApp vouches for.
        await pic.say("pic")
        assert "Dinas Kesehatan" in pic.text
        await pic.press("Periksa pendaftaran")
        await pic.press("Terima")
        await pic.press("Terima")
        await pic.say("pic")
        await pic.press("Ekspor")
        (exported,) = [m for m in pic.inbox if m.type == "document"]
        assert graph.media[exported.payload["document"]["id"]].content.startswith(b"PK")
        await pic.press("Sudah dikirim ke BPJS")
        kpj_file = f"NIK,KPJ\n{WORKER_NIK},90000000001\n{OTHER_NIK},90000000002\n".encode()
        media_id = graph.add_media(kpj_file, "text/csv", "kpj.csv")
        await bot.deliver(wa.document(pic.user, media_id, "kpj.csv", "text/csv"))
        assert "2" in pic.inbox[-1].text
        # A day later Siti writes again (her window opens); Joko does not.
        clock.advance(timedelta(hours=25))
        graph.close_window(str(SITI.wa_id), str(JOKO.wa_id), str(BUDI.wa_id))
        await siti.say("status")
        assert "3201********0001" in siti.text
        await pic.press("Terapkan")
        await bot.dispatch()

        siti_card = siti.inbox[-1]
        assert siti_card.type == "text"
        assert "90000000001" in siti_card.text
        joko_card = joko.inbox[-1]
        assert joko_card.type == "template"
        assert "90000000002" in joko_card.template_params
        # Budi's window closed a day ago too: his two notices are templates.
        budi_cards = [m for m in budi.inbox if m.type == "template"]
        assert sorted(p for m in budi_cards for p in m.template_params if p.startswith("9")) == [
            "90000000001",
            "90000000002",
        ]
        # Meta reports Joko's template delivered and read, in the wrong order: it stays read.
        statuses = [
            wa.status(joko_card.id, "read", JOKO),
            wa.status(joko_card.id, "delivered", JOKO),
            wa.status(joko_card.id, "sent", JOKO),
        ]
        assert await bot.post(wa.encode(wa.webhook(statuses=statuses))) == 200
        async with sessionmaker() as session:
            row = (
                await session.execute(
                    select(Outbox).where(Outbox.provider_message_id == joko_card.id)
                )
            ).scalar_one()
            active = (
                await session.execute(
                    select(func.count())
                    .select_from(Sponsorship)
                    .where(Sponsorship.status == SponsorshipStatus.ACTIVE)
                )
            ).scalar_one()
        assert row.delivery_status is DeliveryStatus.READ
        assert active == 2
        assert graph.errors == {}


async def test_duplicate_webhooks_have_one_effect(
    tmp_path: Path,
    database_url: str,
    graph: FakeGraphServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings = make_settings(tmp_path, database_url, graph)
    await seed(settings)
    async with running(settings, graph, FrozenClock()) as bot:
        graph.open_window(str(SITI.wa_id))
        body = wa.encode(wa.webhook(wa.text(SITI, "halo")))
        # Meta delivers the same message twice at once, then again later.
        statuses = await asyncio.gather(bot.post(body), bot.post(body))
        assert list(statuses) == [200, 200]
        assert await bot.post(body) == 200
        while await bot.channel.processor.drain_once():
            pass
        await bot.channel.replies.drain()
        async with sessionmaker() as session:
            journal = (
                await session.execute(select(func.count()).select_from(WhatsappInbound))
            ).scalar_one()
        assert journal == 1
        (intro,) = graph.messages_to(str(SITI.wa_id))
        assert "belum kami kenal" in intro.text


async def test_a_130429_storm_delays_but_loses_and_repeats_nothing(
    tmp_path: Path,
    database_url: str,
    graph: FakeGraphServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings = make_settings(tmp_path, database_url, graph, batch_size=100)
    clock = FrozenClock()
    recipients = [f"62812000{n:05d}" for n in range(40)]
    async with running(settings, graph, clock) as bot:
        async with bot.runtime.db.begin() as connection:
            for recipient in recipients:
                await enqueue(
                    connection,
                    Notice(
                        dedupe_key=f"card_ready:worker:test-{recipient}",
                        channel=Channel.WHATSAPP,
                        recipient=recipient,
                        kind="card_ready",
                        body="Kartu siap",
                        template="card_ready_worker",
                        params={"name": "Siti", "kpj": "90000000001", "opd": "Dinas Kesehatan"},
                    ),
                    now=clock(),
                )
        # Meta answers "throughput exceeded" to the next 25 sends, whoever they are for.
        graph.fail_next(130429, count=25)
        sender = WhatsAppSender(
            bot.channel.client,
            load_templates(SHIPPED_TEMPLATES),
            clock=clock,
            rate_limit_pause_s=0.05,
        )
        dispatcher = Dispatcher(
            bot.runtime.db,
            {Channel.WHATSAPP: sender},
            clock,
            settings.dispatch,
            bot.runtime.engine.config.timezone,
        )
        async with asyncio.timeout(60):
            while True:
                await dispatcher.tick()
                async with sessionmaker() as session:
                    left = (
                        await session.execute(
                            select(func.count())
                            .select_from(Outbox)
                            .where(Outbox.status != OutboxStatus.SENT)
                        )
                    ).scalar_one()
                if left == 0:
                    break
                # Handed-back rows are due again `retry_after` later on the (frozen) clock.
                await asyncio.sleep(dispatcher.paused_for(Channel.WHATSAPP) or 0.01)
                clock.advance(timedelta(seconds=1))
        await dispatcher.stop()
        assert graph.errors[130429] == 25
        assert sorted(message.to for message in graph.sent) == sorted(recipients)
        assert all(message.type == "template" for message in graph.sent)
        async with sessionmaker() as session:
            rows = (await session.execute(select(Outbox))).scalars().all()
        assert {row.status for row in rows} == {OutboxStatus.SENT}
        assert all(row.provider_message_id for row in rows)
        # Rate limits are not the message's fault: no row used up its attempts on them.
        assert max(row.attempts for row in rows) <= 2


async def test_the_process_answers_the_handshake_and_a_message(
    tmp_path: Path, graph: FakeGraphServer
) -> None:
    """`python -m bot run` with WhatsApp configured (and no Telegram): webhook server up."""
    port = _free_port()
    env = {
        **os.environ,
        "SERTAKAN_DATA_DIR": str(tmp_path),
        "SERTAKAN_OPD_SEED_FILE": str(OPD_SEED),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        "WHATSAPP_PHONE_NUMBER_ID": graph.phone_number_id,
        "WHATSAPP_ACCESS_TOKEN": graph.token,
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHATSAPP_API_BASE": graph.base_url,
        "WHATSAPP_API_VERSION": graph.api_version,
        "WHATSAPP_TEMPLATES_FILE": str(SHIPPED_TEMPLATES),
        "WEB_PORT": str(port),
    }
    env.pop("TELEGRAM_TOKEN", None)
    process = await _run(env)
    url = f"http://127.0.0.1:{port}/whatsapp/webhook"
    try:
        async with aiohttp.ClientSession() as http:

            async def handshake() -> None:
                while True:
                    with contextlib.suppress(aiohttp.ClientConnectionError):
                        params = {
                            "hub.mode": "subscribe",
                            "hub.verify_token": VERIFY_TOKEN,
                            "hub.challenge": "1158201444",
                        }
                        async with http.get(url, params=params) as response:
                            assert response.status == 200
                            assert await response.text() == "1158201444"
                            return
                    await asyncio.sleep(0.2)

            await process.wait_for(handshake())
            graph.open_window(str(SITI.wa_id))
            # The process runs on the real clock: a message sent now, not on the fixtures' date.
            body = wa.encode(wa.webhook(wa.text(SITI, "halo", at=datetime.now(UTC))))
            async with http.post(
                url, data=body, headers={"X-Hub-Signature-256": "sha256=00"}
            ) as bad:
                assert bad.status == 403
            headers = {"X-Hub-Signature-256": wa.sign(body), "Content-Type": "application/json"}
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 200
            await process.wait_for(
                graph.wait_until(
                    lambda: bool(graph.messages_to(str(SITI.wa_id))), timeout=START_WITHIN_S
                )
            )
        (intro,) = graph.messages_to(str(SITI.wa_id))
        assert "belum kami kenal" in intro.text
    finally:
        code, output = await _stop(process)
    assert code == 0, output
