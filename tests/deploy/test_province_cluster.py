"""Issue 14's proof: a province on `sertakan run --workers 3` behind nginx, one killed midway.

Real processes, as DEPLOY.md tells a province to run them (bench/launcher.py):
Debian's nginx with the shipped site (TLS, the webhook paths) in front of one
supervisor and its 3 children on one port, on PostgreSQL; the fake Bot API in
webhook mode and the fake Graph API, both enforcing their platform's limits.

300 people each register as an ASN on Telegram (9 updates), enroll a household
worker (15 updates), and the worker answers the WhatsApp consent request that
enrollment causes (a template from the outbox) with its button. Every update
is delivered 1-3 times at once, each copy to nginx or straight to the bot's
port on a new connection (the kernel picks the process), and a copy that is
not answered 200 is delivered again, as Telegram and Meta do. Midway one child
is killed with SIGKILL; the supervisor starts another (what systemd's unit
does for a whole process).

Asserted: every ASN has exactly one enrollment, consented; every person got
the same messages in the same order as the first person (so each step applied
once and in order, and every reply and notice went out exactly once: counted
at the fakes by chat and text); no flood refusal at all from the enforcing
fakes: no 429 of Telegram's sliding second or per-chat limit, no 130429 or
131056 (the pair limit with Meta's documented burst) nor any other Graph API
error; each planning run done once (planner_runs), no two attempts
overlapping; the webhook and the command menu registered once, by the
supervisor, the restart included.

The fakes run in processes of their own (tests/fakes/serve.py): on this test's
event loop, which also plays 300 people, they stamped sends the bots spaced
correctly late and bunched (11-72 refusals of Telegram's sliding second at
load 4-10 with a fifth of the rate unused). The first person learns what each
step brings and everyone else follows one step behind it.

The Telegram budget is raised to 150 messages/s on both sides (bot and fake):
300 people's ~8,000 messages at the real 30/s take 4.5 minutes by themselves;
the budget is shared through PostgreSQL the same way at any rate, and the
fake refuses anything over the rate it is given. Per chat 1 s and per
WhatsApp recipient 6 s are the platforms' own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.bench_enrollment import ENROLLMENT, REGISTRATION, Step
from bench.launcher import (
    NGINX,
    WEBHOOK_SECRET,
    Nginx,
    Province,
    bot_environment,
    free_port,
    run_command,
)
from domain.vocabulary import Channel, WorkerConsent
from storage.db import is_sqlite
from storage.models import PendingReply, PlannerRun, Sponsorship
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.chat import OPD_SEED
from tests.fakes.graph_api import PAIR_BURST, SHIPPED_TEMPLATES, FakeGraphServer, SentWhatsApp
from tests.fakes.serve import RemoteGraphServer, RemoteTelegramServer
from tests.fakes.telegram_api import FakeTelegramServer, SentMessage
from tests.fakes.telegram_user import TelegramUser, inline_buttons

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs it)"
)

PEOPLE = int(__import__("os").environ.get("PROVINCE_PEOPLE", "300"))
WORKERS = 3
TELEGRAM_RATE = 150
#: The send budget keeps this share of the fakes' rates unused (see its use).
PROOF_RATE_MARGIN = 0.1
WHATSAPP_RATE = 80
CHAT_INTERVAL_S = 1.0
#: A step's replies (up to 3 messages) go out together, as Telegram allows in a private chat.
CHAT_BURST = 3
PAIR_INTERVAL_S = 6.0
FIRST_USER = 610_000_000
#: One step (its replies out) may take this long on a loaded machine before the test fails.
STEP_WITHIN_S = 90.0
#: The whole replay.
RUN_WITHIN_S = 1200.0


def worker_phone(index: int) -> str:
    return f"0812{30_000_000 + index:08d}"


def wa_id(index: int) -> str:
    return "62" + worker_phone(index)[1:]


MONTHS = "Januari|Februari|Maret|April|Mei|Juni|Juli|Agustus|September|Oktober|November|Desember"


def normalised(text: str) -> str:
    """A message with its numbers and month names blanked (NIP, NIK, phones and the birth
    dates in them differ per person)."""
    return re.sub(MONTHS, "<month>", re.sub(r"\d+", "#", text))


class Cluster:
    """The running province and how updates reach it."""

    def __init__(
        self,
        province: Province,
        nginx: Nginx,
        telegram: RemoteTelegramServer,
        graph: RemoteGraphServer,
        http: aiohttp.ClientSession,
    ) -> None:
        self.province = province
        self.nginx = nginx
        self.telegram = telegram
        self.graph = graph
        self.http = http
        self.copies = 0
        self.retried = 0
        self.random = random.Random(14)
        self.killed_at: list[float] = []
        #: The province's database (set by the test).
        self.database: AsyncEngine | None = None

    @functools.cached_property
    def tls(self) -> aiohttp.ClientSession:
        """Kept-alive connections to nginx (a TLS handshake per update would make this
        test process, which also plays both platforms, the bottleneck)."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, ssl=self.nginx.tls))

    def _target(self, path: str) -> tuple[str, dict[str, Any]]:
        """nginx (TLS) or the bot's own port, at random."""
        if self.random.random() < 0.5:
            return f"{self.nginx.base}{path}", {"ssl": self.nginx.tls}
        return f"{self.province.direct}{path}", {}

    async def _until_ok(self, post: Any) -> None:
        """One copy, delivered again until answered 200 (a killed process drops it)."""
        self.copies += 1
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                if await post() == 200:
                    return
            self.retried += 1
            await asyncio.sleep(0.5)
        raise AssertionError("an update was never accepted")

    async def replies_delivered(self, channel: Channel, chat_id: str) -> None:
        """Until no reply to `chat_id` waits in the reply queue: each row is deleted
        once the platform accepted all its messages."""
        assert self.database is not None
        waiting = (
            select(func.count())
            .select_from(PendingReply)
            .where(PendingReply.channel == channel, PendingReply.chat_id == chat_id)
        )
        async with asyncio.timeout(STEP_WITHIN_S):
            while True:
                async with self.database.connect() as connection:
                    if not await connection.scalar(waiting):
                        return
                await asyncio.sleep(0.1)

    async def telegram_update(self, update: dict[str, Any]) -> None:
        """Telegram's webhook delivery of `update`, 1-3 copies at once."""

        async def post() -> int:
            url, options = self._target("/telegram/webhook")
            if "ssl" in options:  # to nginx: kept-alive TLS connections, as Telegram's
                headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
                async with self.tls.post(url, json=update, headers=headers) as response:
                    await response.read()
                    return response.status
            return await self.telegram.post_webhook(update, url=url, **options)

        copies = self.random.randint(1, 3)
        await asyncio.gather(*(self._until_ok(post) for _ in range(copies)))

    async def whatsapp(self, incoming: wa.Incoming) -> None:
        """Meta's signed webhook POST of `incoming`, 1-3 copies at once."""
        body = wa.encode(wa.webhook(incoming))
        headers = {"X-Hub-Signature-256": wa.sign(body), "Content-Type": "application/json"}

        async def post() -> int:
            url, options = self._target("/whatsapp/webhook")
            async with self.http.post(url, data=body, headers=headers, **options) as response:
                await response.read()
                return response.status

        copies = self.random.randint(1, 3)
        await asyncio.gather(*(self._until_ok(post) for _ in range(copies)))


class Person:
    """An ASN on Telegram whose worker answers on WhatsApp."""

    def __init__(self, cluster: Cluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.chat = FIRST_USER + index
        #: The texts of the previous step's replies (normalised); None: not known.
        self.shown: list[str] | None = None

    @property
    def messages(self) -> list[SentMessage]:
        return self.cluster.telegram.messages_to(self.chat)

    def _update(self, step: Step) -> dict[str, Any]:
        server = self.cluster.telegram
        kind, argument = step[0], step[1](self.index)
        if argument == "081298765432":  # the worker's phone: one each
            argument = worker_phone(self.index)
        if kind == "text":
            return server.text_update(self.chat, argument)
        if kind == "contact":
            return server.contact_update(self.chat, argument)
        # The buttons of the previous step's replies (not of a message sent again later).
        shown = [
            m
            for m in self.messages
            if inline_buttons(m) and (self.shown is None or normalised(m.text) in self.shown)
        ]
        if kind == "press":
            return TelegramUser(server, self.chat).press_update(argument, among=shown)
        latest = shown[-1]  # its first button
        data = inline_buttons(latest)[0]["callback_data"]
        return server.callback_update(self.chat, data, latest.message_id)

    async def _paced(self) -> None:
        """A person reads before answering: no step until the chat's burst window has
        passed since our last message, so the next step's replies (up to CHAT_BURST) are
        within Telegram's per-chat limit whatever came just before (a run with a one
        interval pause got one per-chat 429 from two steps' replies in 1.05 s)."""
        if self.messages:
            window = CHAT_BURST * CHAT_INTERVAL_S
            wait = self.messages[-1].at + window + 0.05 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    async def step(self, step: Step, expected: list[str] | None) -> list[str]:
        """Send one step; wait until its replies came: the `expected` texts (normalised),
        or, for the first person, whatever came until its replies left the reply queue."""
        await self._paced()
        before = len(self.messages)
        await self.cluster.telegram_update(self._update(step))
        server = self.cluster.telegram

        def since() -> list[str]:
            return [normalised(m.text) for m in self.messages[before:]]

        if expected is not None:
            # Texts, not a count: a reply sent again after the kill must not end the wait.
            try:
                await server.wait_until(
                    lambda: all(text in since() for text in expected), timeout=STEP_WITHIN_S
                )
            except TimeoutError:
                raise AssertionError(
                    f"person {self.index}: after {step[0]} {step[1](self.index)!r} came "
                    f"{since()}, not {expected}; killed at {self.cluster.killed_at}, now "
                    f"{time.monotonic()}; {[(m.at, m.text[:40]) for m in self.messages[-4:]]}\n"
                    f"the bot's log:\n{self.cluster.province.log_tail(30)}"
                ) from None
            self.shown = expected
            return expected
        # The step's replies were written with the step; each row goes once the platform
        # took all its messages (under load one reply's messages may come a second apart,
        # too far apart to tell the end of a step by a pause).
        await server.wait_until(lambda: len(self.messages) > before, timeout=STEP_WITHIN_S)
        await self.cluster.replies_delivered(Channel.TELEGRAM, str(self.chat))
        await server.synced()
        return since()

    async def consent(self) -> None:
        """The worker receives the consent template and presses its first button (YA)."""
        graph = self.cluster.graph
        number = wa_id(self.index)
        await graph.wait_until(lambda: bool(graph.messages_to(number)), timeout=STEP_WITHIN_S)
        request = graph.messages_to(number)[0]
        assert request.type == "template"
        # Pressed at once: the template and our reply of two messages are within Meta's
        # pair burst (the run before this waited one pair interval first).
        worker = wa.WaUser(wa_id=number, user_id=f"ID.{number}", name="Siti Aminah")
        await graph.control("open_window", number)
        yes = request.template_payloads[0]
        assert yes.startswith("consent:yes:")
        incoming = wa.quick_reply(worker, yes, "YA", at=datetime.now(UTC))
        await self.cluster.whatsapp(incoming)


@contextlib.asynccontextmanager
async def province_up(
    tmp_path: Path,
    database_url: str,
    telegram: RemoteTelegramServer,
    graph: RemoteGraphServer,
    database: AsyncEngine,
) -> AsyncIterator[Cluster]:
    port = free_port()
    (tmp_path / "nginx").mkdir()
    nginx = Nginx(tmp_path / "nginx", port)
    env = bot_environment(
        tmp_path,
        database_url,
        port=port,
        webhook_url=f"{nginx.base}/telegram/webhook",
        telegram=(telegram.token, telegram.base_url),
        whatsapp={
            "WHATSAPP_PHONE_NUMBER_ID": graph.phone_number_id,
            "WHATSAPP_ACCESS_TOKEN": graph.token,
            "WHATSAPP_APP_SECRET": wa.APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": wa.VERIFY_TOKEN,
            "WHATSAPP_API_BASE": graph.base_url,
            "WHATSAPP_API_VERSION": graph.api_version,
            "WHATSAPP_TEMPLATES_FILE": str(SHIPPED_TEMPLATES),
        },
        DATABASE_AUTO_MIGRATE="false",
        DISPATCH_TELEGRAM_RATE_PER_S=str(TELEGRAM_RATE),
        # A send arriving more than the margin's share of a second (4 %: ~40 ms) after
        # its planned start can put one too many into a sliding second; on this 2-core
        # machine, shared with other suites, a bot process may wait that long for a core.
        # 10 % (~100 ms) allows for the machine, not for the pacing. Not settled: with the
        # fakes in their own processes, 3 refusals of 8,400 sends came at 4 % and at 10 %
        # alike in 2 of 7 runs at load 4-9, cause unknown (BENCHMARKS 15a).
        DISPATCH_RATE_MARGIN=str(PROOF_RATE_MARGIN),
        DISPATCH_WHATSAPP_RATE_PER_S=str(WHATSAPP_RATE),
        DISPATCH_TELEGRAM_CHAT_INTERVAL_S=str(CHAT_INTERVAL_S),
        DISPATCH_WHATSAPP_CHAT_INTERVAL_S=str(PAIR_INTERVAL_S),
        DISPATCH_TICK_INTERVAL_S="0.5",
        DISPATCH_IDLE_S="0.2",
        # The default lease. Before holders renewed their leases, a 10 s lease let
        # another process take over, and send again, replies their holder was still
        # waiting to send under load (2-8 copies with no process killed); with renewal
        # a 10 s lease passed at load 4 and sent a reply twice at load 15 (renewals late
        # on a starved loop): the default keeps that margin on a loaded CI machine.
        REPLY_LEASE_S=str(REPLY_LEASE_S),
        PLANNER_TICK_S="1",
    )
    await run_command(env, "opd", "load", str(OPD_SEED))
    province = Province(env, WORKERS)
    await nginx.start()
    try:
        await province.start()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        ) as http:
            cluster = Cluster(province, nginx, telegram, graph, http)
            cluster.database = database
            try:
                yield cluster
            finally:
                await cluster.tls.close()
    finally:
        try:
            code = await province.stop()
        finally:
            await nginx.stop()
        assert code == 0, province.log_tail()


async def test_three_processes_behind_nginx_enroll_300_people_once_each_through_a_kill(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine
) -> None:
    if is_sqlite(database_url):
        pytest.skip("several processes need PostgreSQL (TEST_DATABASE_URL)")
    started = time.monotonic()
    # Each fake in a process of its own: it judges a send when it arrives, not when
    # this test's loop, busy with 300 people, gets to it (tests/fakes/serve.py).
    async with RemoteTelegramServer() as telegram, RemoteGraphServer() as graph:
        await telegram.control(
            "enforce_rates",
            per_second=TELEGRAM_RATE,
            chat_interval_s=CHAT_INTERVAL_S,
            chat_burst=CHAT_BURST,
        )
        await graph.control(
            "enforce_rates",
            per_second=WHATSAPP_RATE,
            pair_interval_s=PAIR_INTERVAL_S,
            pair_burst=PAIR_BURST,
        )
        phases: dict[str, float] = {"fakes up": time.monotonic() - started}
        async with province_up(tmp_path, database_url, telegram, graph, db_engine) as cluster:
            phases["province up"] = time.monotonic() - started
            province = cluster.province
            first_children = province.children()
            assert len(first_children) == WORKERS
            await telegram.wait_until(lambda: bool(telegram.calls_of("setWebhook")), timeout=60)
            steps = [*REGISTRATION, *ENROLLMENT]

            # The first person learns what each step brings (its messages, waiting for
            # quiet after each step); everyone else takes step n once the first person
            # has learned it, so the crowd follows one step behind instead of waiting
            # for the whole walk.
            reference = Person(cluster, 0)
            replies: list[list[str]] = []
            learned = asyncio.Condition()
            total = len(steps) * (PEOPLE - 1)
            done = 0
            killed: list[int] = []
            killed_at = cluster.killed_at
            halfway = asyncio.Event()

            async def lead() -> None:
                for step in steps:
                    texts = await reference.step(step, None)
                    async with learned:
                        replies.append(texts)
                        learned.notify_all()
                await reference.consent()
                phases["first person"] = time.monotonic() - started

            async def walk(person: Person) -> None:
                nonlocal done
                for number, step in enumerate(steps):
                    async with learned:
                        await learned.wait_for(lambda n=number: len(replies) > n)  # type: ignore[misc]
                    await person.step(step, replies[number])
                    done += 1
                    if done >= total // 2:
                        halfway.set()
                await person.consent()

            async def kill_midway() -> None:
                await halfway.wait()
                # Right after the first person learned a step: it has nothing on its way
                # (its replies left the reply queue), so what it learns is never a copy.
                async with learned:
                    await learned.wait()
                victim = cluster.random.choice(province.children())
                province.kill(victim)
                killed.append(victim)
                killed_at.append(time.monotonic())

            people = [Person(cluster, index) for index in range(1, PEOPLE)]
            killer = asyncio.create_task(kill_midway())
            await asyncio.wait_for(
                asyncio.gather(lead(), *(walk(person) for person in people)), RUN_WITHIN_S
            )
            await killer
            phases["299 people"] = time.monotonic() - started
            everyone = [reference, *people]

            # Each ASN is told their worker consented (a notice from the outbox).
            def told(person: Person) -> bool:
                return any("menyetujui" in m.text for m in person.messages)

            await telegram.wait_until(lambda: all(told(p) for p in everyone), timeout=120)
            # Each worker has as many WhatsApp messages as the first one, then nothing
            # more is on its way: quiet at both fakes for longer than the pair interval
            # (notices to one recipient go 6 s apart).
            first_worker = len(got_messages(graph, 0))
            await graph.wait_until(
                lambda: all(
                    len(got_messages(graph, index)) >= first_worker for index in range(PEOPLE)
                ),
                timeout=120,
            )
            phases["every notice"] = time.monotonic() - started
            await settle(telegram, graph)
            phases["settled"] = time.monotonic() - started
            await province.wait_children()
            await telegram.synced()
            await graph.synced()
            restarted = province.children()

        # Outside the province now: every process stopped (exit code 0 checked).
        elapsed = time.monotonic() - started

    # One process was killed and replaced.
    assert killed and killed[0] not in restarted and len(restarted) == WORKERS
    assert cluster.copies > len(steps) * PEOPLE  # duplicates were delivered

    # Every person got what the first one got, in the same order, once; except that a
    # message the killed process sent in its last moments (sent, but not yet recorded
    # as sent: DeliverySettings.flush_delay_s plus the DELETE) goes out again after
    # its lease (at least once, never lost).
    crash = CrashWindow(killed_at[0])
    expected = [normalised(m.text) for m in reference.messages]
    for person in people:
        got = [normalised(m.text) for m in crash.without_resent(person.messages)]
        assert got == expected, (
            f"person {person.index}; killed at {crash.killed_at:.2f}; their messages "
            "(seconds after the kill, text): "
            f"{[(round(m.at - crash.killed_at, 2), m.text[:30]) for m in person.messages]}"
            f"\nthe bot's warnings and errors:\n{warnings_of(province)}"
        )
    expected_worker = [normalised(m.text) for m in graph.messages_to(wa_id(0))]
    for index in range(1, PEOPLE):
        got = [normalised(m.text) for m in crash.without_resent(graph.messages_to(wa_id(index)))]
        assert got == expected_worker, f"worker {index}"
        assert [m.type for m in got_messages(graph, index)][:1] == ["template"]
    every = collections.Counter((m.chat_id, m.text) for m in telegram.sent)
    print(f"province proof: Telegram refusals by limit: {dict(telegram.refused_by)}")
    for refusal in telegram.refusals:
        print(
            f"  {refusal.limit} at {refusal.at - started:.2f} s from the start "
            f"({refusal.at - crash.killed_at:+.2f} s from the kill), {refusal.chat_id}, "
            f"{refusal.in_last_second} in the second before, {refusal.text!r}"
        )
    print(f"province proof: Graph API refusals by code: {dict(graph.errors)}")

    async with db_engine.connect() as connection:
        enrollments = (
            await connection.execute(
                select(
                    Sponsorship.asn_id, func.count(), func.min(Sponsorship.worker_consent)
                ).group_by(Sponsorship.asn_id)
            )
        ).all()
        runs = (await connection.execute(select(PlannerRun.__table__))).all()
    assert len(enrollments) == PEOPLE
    assert {count for _, count, _ in enrollments} == {1}
    assert {consent for _, _, consent in enrollments} == {WorkerConsent.GIVEN}

    # Each planning run once: one done attempt per (job, day), attempts never overlapping.
    by_run = collections.defaultdict(list)
    for run in runs:
        by_run[(run.job, run.run_key)].append(run)
    assert by_run, "no planning ran"
    for key, attempts in by_run.items():
        assert [a.status for a in attempts].count("done") == 1, (key, attempts)
        spans = sorted((a.started_at, a.finished_at or a.lease_until) for a in attempts)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, key

    # Telegram's set-up calls: once, by the supervisor, the restart included.
    assert len(telegram.calls_of("setWebhook")) == 1
    assert len(telegram.calls_of("setMyCommands")) == len(telegram.commands)
    assert len(telegram.calls_of("getMe")) == 1
    print(
        f"\n{PEOPLE} people, {cluster.copies} copies ({cluster.retried} redelivered), "
        f"{len(every)} Telegram messages, {crash.resent} sent again after the kill, "
        f"{elapsed:.0f} s; seconds from the start: "
        + ", ".join(f"{phase} {at:.1f}" for phase, at in phases.items())
    )

    # No flood refusal from the enforcing fakes: neither Telegram's limits (the whole
    # bot's sliding second, 1/s per chat in bursts of CHAT_BURST) nor the Graph API's
    # throughput (130429) or pair rate limit (131056, with Meta's documented burst: a
    # reply of 2-3 messages to one number is within it), nor any other Graph API error.
    assert telegram.refused_by == {}, f"refused by limit: {dict(telegram.refused_by)}"
    assert +graph.errors == {}, f"Graph API errors by code: {dict(graph.errors)}"


def warnings_of(province: Province, lines: int = 60) -> str:
    """The province's last log lines but APScheduler's "skipped: maximum number of running
    instances" (a dispatcher tick longer than its interval, every half second under load)."""
    kept = [
        line for line in province.log_tail(10_000).splitlines() if "running instances" not in line
    ]
    return "\n".join(kept[-lines:])


def got_messages(graph: FakeGraphServer, index: int) -> list[SentWhatsApp]:
    return graph.messages_to(wa_id(index))


#: The replies' lease (REPLY_LEASE_S) in the province: see `CrashWindow`.
REPLY_LEASE_S = 30.0


class CrashWindow:
    """Messages sent again because the process that sent them was killed before it
    recorded them. The first copy came from `WINDOW_S` before the kill to `LAG_S`
    after it (a message the victim wrote to its socket just before it died may be
    read a moment later), the second from `TAKEN_OVER_AFTER_S` after the kill (a
    survivor takes a dead process's rows over only when their lease has run out:
    REPLY_LEASE_S, renewed every third of it: two thirds of it at the earliest) to
    `TAKEN_OVER_BY_S`, and right after the first copy in that person's chat: the
    person's later replies queue behind the dead process's rows (kept in order), so
    nothing comes between. A copy is the same text; the same text later, after other
    messages (a menu shown again, say), is the person's own next message, not a copy.
    """

    WINDOW_S = 3.0
    LAG_S = 2.0
    TAKEN_OVER_AFTER_S = REPLY_LEASE_S * 2 / 3 - 1
    #: A lease, a sweep and a send on a starved machine later: a run at load 9 saw a
    #: copy 47.7 s after the kill (the window before was the lease + 10 s, and failed).
    TAKEN_OVER_BY_S = REPLY_LEASE_S + 60.0

    def __init__(self, killed_at: float) -> None:
        self.killed_at = killed_at
        self.resent = 0

    def without_resent(self, messages: Sequence[SentMessage | SentWhatsApp]) -> list[Any]:
        kept: list[Any] = []
        in_window: collections.Counter[str] = collections.Counter()
        #: The previous message was in the kill's window or a copy.
        follows_window = False
        for message in messages:
            taken_over = (
                self.killed_at + self.TAKEN_OVER_AFTER_S
                <= message.at
                <= self.killed_at + self.TAKEN_OVER_BY_S
            )
            if taken_over and follows_window and in_window[message.text] > 0:
                in_window[message.text] -= 1
                self.resent += 1
                continue
            follows_window = (
                self.killed_at - self.WINDOW_S <= message.at <= self.killed_at + self.LAG_S
            )
            if follows_window:
                in_window[message.text] += 1
            kept.append(message)
        return kept


async def settle(telegram: FakeTelegramServer, graph: FakeGraphServer) -> None:
    """Until neither fake received a message for longer than one WhatsApp pair interval."""
    while True:
        counts = (len(telegram.sent), len(graph.sent))
        await asyncio.sleep(PAIR_INTERVAL_S + 2.0)
        if counts == (len(telegram.sent), len(graph.sent)):
            return
