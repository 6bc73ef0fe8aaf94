"""The conversation engine: one inbound event, one transaction, a list of replies.

For every event: take the sender's in-process lock (updates of one person run
in order even when the transport delivers them concurrently), open a
transaction, claim the update id (a replay has no effect), load and lock the
conversation row, apply the event, write the new state, commit, and only then
return the replies for the channel to send. Nothing about a conversation lives
only in memory, so a restart resumes at the same step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.vocabulary import Channel, Language
from handlers import menus
from handlers.context import (
    GLOBAL_PREFIX,
    Account,
    Context,
    EngineConfig,
    FileReading,
    Repositories,
)
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Outcome
from handlers.flows import consent, correction, pic, ticket, worker
from handlers.flows.consent import LinkConsentFlow
from handlers.flows.correction import CorrectionFlow
from handlers.flows.enrollment import EnrollmentFlow
from handlers.flows.payment import PaymentFlow
from handlers.flows.pic import HandoverFlow, PaymentsFlow, VerifyFlow
from handlers.flows.plan_change import PlanChangeFlow
from handlers.flows.registration import RegistrationFlow
from handlers.flows.stop import StopSponsoringFlow
from handlers.flows.ticket import AnswerFlow, AskFlow
from handlers.flows.worker import CONSENT_PREFIX, EraseFlow
from handlers.i18n import Catalogs
from handlers.notices import Notices
from handlers.parsing import match_option, normalise, record_id, storable_event
from handlers.types import EventKind, InboundEvent, QueuedReplies, Reply, encode_replies
from handlers.web_link import web_link
from handlers.where_to_pay import where_to_pay
from storage.collective_file import KpjFileError
from storage.consent_links import is_consent_payload
from storage.conversation_store import ConversationStore, conversation_store
from storage.crypto import NikCipher
from storage.isolated_read import read_kpj_file_isolated
from storage.roles import InviteProblem, redeem_invite

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Slash commands (Telegram) and their actions.
COMMANDS = {
    "start": "start",
    "menu": "menu",
    "daftar": "enroll",
    "pekerja": "workers",
    "info": "info",
    "bantuan": "help",
    "help": "help",
    "batal": "cancel",
    "cancel": "cancel",
    "kembali": "back",
    "back": "back",
    "bahasa": "language",
    "language": "language",
    "pic": "pic",
    "bayar": "pay",
    "tanya": "ask",
    "admin": "admin",
    "berhenti": "stop",
    "web": "web",
}
#: Words that act at any step (PRODUCT 4: batal, menu, bantuan; plus kembali).
FLOW_WORDS = {
    "batal": "cancel",
    "cancel": "cancel",
    "menu": "menu",
    "bantuan": "help",
    "help": "help",
    "kembali": "back",
    "back": "back",
}
#: Extra words understood when no flow is running (WhatsApp users type words, not commands).
IDLE_WORDS = {
    **FLOW_WORDS,
    "daftar": "enroll",
    "pekerja": "workers",
    "info": "info",
    "bahasa": "language",
    "language": "language",
    "mulai": "start",
    "start": "start",
    "pic": "pic",
    "bayar": "pay",
    "tanya": "ask",
    "admin": "admin",
    "berhenti": "stop",
    # The worker's words on WhatsApp (PRODUCT 4.6); for anyone else they lead to the menu.
    "ya": "consent:yes",
    "tidak": "consent:no",
    "status": "wstatus",
    "hapus": "erase",
}
#: Key in an idle conversation's data: what the flow that just ended sent (`Done.sent_key`)
#: and the versions of its questions.
_SENT = "_sent"
#: Key in a running flow's data: the version of its first question (kept with a draft).
_SINCE = "_since"
#: A typed PIC invite code ("PIC-7K3QX9AB"; the prefix is optional with the dash).
_INVITE_CODE = re.compile(r"^\s*pic[-\s]?([a-z0-9]{8})\s*$", re.IGNORECASE | re.ASCII)


class _KeyedLocks:
    """One asyncio.Lock per sender, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[Channel, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[Channel, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Engine:
    """Implements `handlers.types.ConversationEngine`."""

    def __init__(
        self,
        *,
        database: AsyncEngine,
        cipher: NikCipher,
        config: EngineConfig,
        catalogs: Catalogs,
        clock: Clock,
        worker_channel: Channel | None = None,
        reply_lease: timedelta = timedelta(seconds=30),
    ) -> None:
        """`worker_channel`: where workers are asked for consent and told (WhatsApp), if any.

        `reply_lease`: how long a queued reply is held by this process before
        another may take it over (`handle_queued`; storage.reply_queue).
        """
        self._reply_lease = reply_lease
        self._database = database
        self._cipher = cipher
        self._config = config
        self._catalogs = catalogs
        self._clock = clock
        self._locks = _KeyedLocks()
        self._notices = Notices(catalogs, worker_channel=worker_channel, timezone=config.timezone)
        self._flows: dict[str, Flow] = {
            flow.name: flow
            for flow in (
                RegistrationFlow(),
                EnrollmentFlow(),
                CorrectionFlow(),
                VerifyFlow(),
                HandoverFlow(),
                PaymentFlow(),
                PaymentsFlow(),
                PlanChangeFlow(),
                EraseFlow(),
                AskFlow(),
                AnswerFlow(),
                StopSponsoringFlow(),
                LinkConsentFlow(),
            )
        }

    @property
    def notices(self) -> Notices:
        """What proactive notices say and to whom (also used by the CLI and planners)."""
        return self._notices

    def use_telegram_username(self, username: str) -> None:
        """The Telegram bot's username learnt at start-up (getMe), for the links it shows."""
        self._config = dataclasses.replace(
            self._config, telegram_bot_username=username.strip().lstrip("@")
        )

    @property
    def config(self) -> EngineConfig:
        """The program settings the engine runs with (tariff, calendar, plans)."""
        return self._config

    async def language_of(self, channel: Channel, sender_id: str) -> Language:
        async with self._database.connect() as connection:
            language = await (await conversation_store(connection)).language(channel, sender_id)
        return language or self._config.default_language

    async def handle(self, event: InboundEvent) -> Sequence[Reply]:
        return (await self._handle(event, queue=False)).replies

    async def handle_queued(self, event: InboundEvent) -> QueuedReplies:
        return await self._handle(event, queue=True)

    async def _handle(self, event: InboundEvent, *, queue: bool) -> QueuedReplies:
        event = storable_event(event)  # no NUL, surrogate or oversized field reaches a step
        # Read before the transaction opens: on SQLite everybody's events share one
        # connection, and a read of up to a minute must not hold them.
        reading = await self._read_spreadsheet(event)
        async with self._locks.hold((event.channel, event.sender_id)):
            # Closed explicitly: `async with engine.connect()` runs close() in a task
            # of its own, an extra event-loop round on every event (bench/).
            connection = await self._database.connect()
            try:
                async with connection.begin():
                    now = self._clock()
                    store = await conversation_store(connection)
                    if not await store.claim(event.channel, event.update_id, now):
                        log.info("replayed update %s/%s ignored", event.channel, event.update_id)
                        return QueuedReplies((), self._config.default_language)
                    replies, language = await self._apply(connection, store, event, now, reading)
                    if not queue or not replies:
                        return QueuedReplies(replies, language)
                    # Written with the step, so a reply the platform refuses for a
                    # while is sent again later instead of being lost.
                    payload = self._cipher.encrypt_payload(encode_replies(replies, language))
                    reply_id, earlier = await store.queue_replies(
                        event.channel,
                        event.sender_id,
                        event.update_id,
                        payload,
                        now=now,
                        lease_until=now + self._reply_lease,
                    )
            finally:
                await connection.close()
        return QueuedReplies(replies, language, reply_id, earlier)

    async def _read_spreadsheet(self, event: InboundEvent) -> FileReading | None:
        """A document that may be a KPJ file (CSV, or XLSX: a zip), read in a child process
        with limits (storage.isolated_read); None for anything else. Only a PIC's file
        is used; reading one that is not is a wasted child process, no more."""
        content = event.file_content
        if event.kind is not EventKind.DOCUMENT or content is None:
            return None
        name = (event.file_name or "").lower()
        if not (content.startswith(b"PK") or name.endswith((".csv", ".txt", ".xlsx"))):
            return None
        try:
            return await read_kpj_file_isolated(
                event.file_name or "kpj",
                content,
                budget=self._config.kpj_file_budget,
                limits=self._config.kpj_read_limits,
            )
        except KpjFileError as error:
            return error

    # -- one event -----------------------------------------------------------------

    async def _apply(
        self,
        connection: AsyncConnection,
        store: ConversationStore,
        event: InboundEvent,
        now: datetime,
        reading: FileReading | None = None,
    ) -> tuple[list[Reply], Language]:
        """The replies to `event` and the language they are written in."""
        language = self._config.default_language
        if event.language_hint and event.language_hint.lower().startswith("en"):
            language = Language.ENGLISH
        record = await store.open(
            event.channel,
            event.sender_id,
            language=language,
            display_name=event.display_name,
            now=now,
        )
        state = record.state
        ctx = Context(
            event=event,
            now=now,
            config=self._config,
            t=self._catalogs.translator(record.language),
            account=Account(id=record.account_id, language=record.language),
            state=state,
            repo=Repositories(connection, self._cipher),
            cipher=self._cipher,
            notices=self._notices,
            file_reading=reading,
        )
        replies = await self._route(ctx, record.updated_at)
        await ctx.repo.flush_and_close()
        await store.save(record.conversation_id, state, now=now)
        if ctx.account.language is not record.language:
            await store.set_language(record.account_id, ctx.account.language)
        log.debug(
            "update %s/%s -> flow=%s step=%s v%s",
            event.channel,
            event.update_id,
            state.flow,
            state.step,
            state.version,
        )
        return replies, ctx.account.language

    async def _route(self, ctx: Context, idle_since: datetime) -> list[Reply]:
        event, state = ctx.event, ctx.state

        if event.kind is EventKind.COMMAND:
            if (event.command or "").lower() == "start" and event.command_args:
                if is_consent_payload(event.command_args):
                    # A worker's consent link t.me/<bot>?start=c_<token> (PRODUCT 4.6).
                    return await self._open_consent_link(ctx, event.command_args)
                # A Telegram deep link t.me/<bot>?start=<invite code>.
                return await self._redeem(ctx, event.command_args)
            action = COMMANDS.get((event.command or "").lower())
            if action is None:
                notice = ctx.t("input.unknown_command", command=f"/{event.command}")
                return [Reply(notice), *await self._reask_or_menu(ctx)]
            return await self._global(ctx, action)

        if event.kind is EventKind.CHOICE and (event.choice_id or "").startswith(GLOBAL_PREFIX):
            return await self._global(ctx, (event.choice_id or "")[len(GLOBAL_PREFIX) :])
        if event.kind is EventKind.CHOICE and (event.choice_id or "").startswith(CONSENT_PREFIX):
            # The consent template's buttons ("consent:yes:<id>"), valid whenever they arrive.
            return await self._global(
                ctx, "consent:" + (event.choice_id or "")[len(CONSENT_PREFIX) :]
            )

        if (
            event.kind is EventKind.DOCUMENT
            and not self._step_accepts_files(ctx)
            and await ctx.pic() is not None
        ):
            # A PIC's file is a KPJ file from BPJS, whatever they were doing.
            self._park_running(ctx)
            role = await ctx.pic()
            assert role is not None
            return await pic.import_file(ctx, role)

        if event.kind is EventKind.TEXT:
            text = (event.text or "").strip()
            if not state.flow and _INVITE_CODE.match(text):
                return await self._redeem(ctx, text)
            if len(text) > ctx.config.max_input_chars:
                notice = ctx.t(
                    "input.too_long",
                    length=ctx.t.number(len(text)),
                    limit=ctx.t.number(ctx.config.max_input_chars),
                )
                return [Reply(notice), *await self._reask_or_menu(ctx)]
            words = FLOW_WORDS if state.flow else IDLE_WORDS
            action = words.get(normalise(text))
            if action is not None:
                return await self._global(ctx, action)

        flow = self._flows.get(state.flow) if state.flow else None
        if flow is None or state.step is None or not flow.has_step(state.step):
            state.flow = state.step = None
            return await self._idle_input(ctx)

        fresh_choice = event.kind is EventKind.CHOICE and (event.choice_id or "").split(":", 1)[
            0
        ] == str(state.version)
        if ctx.now - idle_since > ctx.config.draft_idle and not fresh_choice:
            self._park(ctx, flow)
            return [menus.resume_offer(ctx, self._draft_title(ctx))]

        return await self._answer(ctx, flow, event)

    async def _answer(self, ctx: Context, flow: Flow, event: InboundEvent) -> list[Reply]:
        state = ctx.state
        assert state.step is not None
        step = flow.step(state.step)
        question = await step.ask(ctx)
        options = question[-1].options if question else ()
        keys = {opt.id.split(":", 1)[1]: opt for opt in options if ":" in opt.id}

        if event.out_of_order:
            # Taking it would answer a later question with an earlier answer.
            return [Reply(ctx.t("input.out_of_order")), *question]
        answer: Answer
        if event.kind is EventKind.CHOICE:
            version, _, key = (event.choice_id or "").partition(":")
            if version != str(state.version) or key not in keys:
                return [Reply(ctx.t("input.stale_button")), *question]
            answer = Answer(kind=EventKind.CHOICE, choice=key)
        elif event.kind is EventKind.TEXT:
            text = (event.text or "").strip()
            if not text:
                return [Reply(ctx.t("input.empty")), *question]
            choice = match_option(text, options, by_position=not step.numbers_are_values)
            if choice is None and options and not step.free_text:
                return [Reply(ctx.t("input.choose_option")), *question]
            answer = Answer(kind=EventKind.TEXT, text=text, choice=choice)
        elif event.kind is EventKind.CONTACT:
            answer = Answer(
                kind=EventKind.CONTACT,
                contact_phone=event.contact_phone,
                contact_is_own=event.contact_is_own,
            )
        elif event.kind in (EventKind.PHOTO, EventKind.DOCUMENT):
            if not step.accepts_files:
                return [Reply(ctx.t("input.file_not_needed")), *question]
            answer = Answer(kind=event.kind, file_ref=event.file_ref)
        elif step.accepts_files:
            # A sticker or voice note where a photo or file is asked for: the step says
            # what it wants (the generic text would ask for text instead).
            answer = Answer(kind=EventKind.UNSUPPORTED)
        else:
            return [Reply(ctx.t("input.unsupported")), *question]

        outcome = await step.handle(ctx, answer)
        return await self._apply_outcome(ctx, flow, outcome)

    async def _apply_outcome(self, ctx: Context, flow: Flow, outcome: Outcome) -> list[Reply]:
        state = ctx.state
        assert state.step is not None
        if isinstance(outcome, Invalid):
            return [Reply(outcome.message), *await flow.step(state.step).ask(ctx)]
        if isinstance(outcome, Done):
            versions = {"from": state.data.get(_SINCE, 0), "to": state.version}
            self._end_flow(ctx)
            if outcome.sent_key is not None:
                # Until another flow starts: its buttons, pressed again, say it was sent.
                state.data[_SENT] = {"key": outcome.sent_key, **versions}
            replies = list(outcome.replies)
            if outcome.show_menu or not (replies and replies[-1].options):
                # An end that offers nothing lands where the flow says it returns.
                replies.append(await self._landing(ctx, flow))
            return replies
        if isinstance(outcome, Goto):
            target: str | None = outcome.step
        else:
            target = "summary" if state.data.get("_editing") else flow.after(state.step, ctx)
        if target is None:
            raise RuntimeError(f"flow {flow.name} ran past its last step {state.step}")
        if target == "summary":
            state.data.pop("_editing", None)
        if isinstance(outcome, Goto) and outcome.rewind:
            if target in state.history:
                last_visit = len(state.history) - 1 - state.history[::-1].index(target)
                del state.history[last_visit:]
        elif target != state.step:
            state.history.append(state.step)
        self._enter(ctx, target)
        replies = [Reply(outcome.notice)] if outcome.notice else []
        return replies + await flow.step(target).ask(ctx)

    # -- flow state ------------------------------------------------------------------

    def _step_accepts_files(self, ctx: Context) -> bool:
        """Whether the current question takes a photo or document as its answer."""
        flow = self._flows.get(ctx.state.flow or "")
        step = ctx.state.step
        return (
            flow is not None
            and step is not None
            and flow.has_step(step)
            and (flow.step(step).accepts_files)
        )

    def _enter(self, ctx: Context, step: str) -> None:
        ctx.state.step = step
        ctx.state.version += 1

    def _end_flow(self, ctx: Context) -> None:
        state = ctx.state
        state.flow = state.step = None
        state.data = {}
        state.history = []
        state.version += 1

    def _park(self, ctx: Context, flow: Flow) -> None:
        """Keep the running flow as the draft (when anything was answered) and leave it."""
        state = ctx.state
        if any(not key.startswith("_") for key in state.data):
            state.draft = {
                "flow": flow.name,
                "step": state.step,
                "data": state.data,
                "history": state.history,
            }
        self._end_flow(ctx)

    def _park_running(self, ctx: Context) -> None:
        """Park the running flow, if any, before doing something else."""
        flow = self._flows.get(ctx.state.flow or "")
        if flow is not None:
            self._park(ctx, flow)

    async def _landing(self, ctx: Context, flow: Flow) -> Reply:
        """Where `flow` returns when it ends, empties or fails: its own screen or the menu."""
        return await flow.leave(ctx) or await menus.main_menu(ctx)

    def _draft_title(self, ctx: Context) -> str:
        draft = ctx.state.draft or {}
        flow = self._flows.get(str(draft.get("flow")))
        return ctx.t(flow.title_key) if flow else ""

    async def _start_flow(self, ctx: Context, name: str) -> list[Reply]:
        flow = self._flows[name]
        state = ctx.state
        if state.flow == name and state.step:
            return [Reply(ctx.t("flow.already_running")), *await flow.step(state.step).ask(ctx)]
        if state.flow:
            self._park(ctx, self._flows[state.flow])
        refusal = await flow.can_start(ctx)
        if refusal is not None:
            return [Reply(refusal), await self._landing(ctx, flow)]
        if state.draft and state.draft.get("flow") == name:
            return [menus.draft_choice(ctx, ctx.t(flow.title_key), name)]
        state.flow = name
        state.data = dict(await flow.initial_data(ctx))
        state.history = []
        first = flow.first if flow.steps[0].applies(ctx) else flow.after(flow.first, ctx)
        assert first is not None
        self._enter(ctx, first)
        state.data[_SINCE] = state.version
        return await flow.step(first).ask(ctx)

    async def _resume(self, ctx: Context) -> list[Reply]:
        state = ctx.state
        draft = state.draft
        flow = self._flows.get(str(draft.get("flow"))) if draft else None
        if draft is None or flow is None or not flow.has_step(str(draft.get("step"))):
            state.draft = None
            return [Reply(ctx.t("draft.none")), await menus.main_menu(ctx)]
        if state.flow != flow.name:
            refusal = await flow.can_start(ctx)
            if refusal is not None:
                # The draft can no longer be finished (its worker was stopped, lapsed or
                # erased meanwhile): say why, as a fresh start would, and drop it.
                state.draft = None
                return [Reply(refusal), await self._landing(ctx, flow)]
        if state.flow:
            if state.flow == flow.name:
                assert state.step is not None
                return await flow.step(state.step).ask(ctx)
            self._park(ctx, self._flows[state.flow])
        state.flow = flow.name
        state.data = dict(draft.get("data") or {})
        state.history = list(draft.get("history") or [])
        state.draft = None
        self._enter(ctx, str(draft["step"]))
        notice = Reply(ctx.t("draft.resumed", title=ctx.t(flow.title_key)))
        return [notice, *await flow.step(str(draft["step"])).ask(ctx)]

    async def _reask_or_menu(self, ctx: Context) -> list[Reply]:
        flow = self._flows.get(ctx.state.flow) if ctx.state.flow else None
        if flow is not None and ctx.state.step and flow.has_step(ctx.state.step):
            return await flow.step(ctx.state.step).ask(ctx)
        return [await menus.main_menu(ctx)]

    async def _idle_input(self, ctx: Context) -> list[Reply]:
        """Input outside any flow: greet and show the menu (with the draft offer)."""
        event = ctx.event
        if event.kind is EventKind.CHOICE:
            return [Reply(self._stale_notice(ctx)), *await self._menu(ctx)]
        if event.kind is EventKind.UNSUPPORTED:
            return [Reply(ctx.t("input.unsupported")), *await self._menu(ctx)]
        greeting = await worker.greeting(ctx)
        if greeting is not None:
            return greeting
        return [Reply(ctx.t("menu.greeting")), await menus.main_menu(ctx)]

    def _stale_notice(self, ctx: Context) -> str:
        """What an old button pressed outside any flow says: "already sent" for a question
        of a flow that sent something (an enrollment), else that it no longer applies."""
        sent = ctx.state.data.get(_SENT)
        version = record_id((ctx.event.choice_id or "").partition(":")[0])
        if (
            isinstance(sent, dict)
            and version is not None
            and int(sent.get("from") or 0) <= version <= int(sent.get("to") or 0)
        ):
            return ctx.t(str(sent["key"]))
        return ctx.t("input.stale_idle")

    async def _menu(self, ctx: Context) -> list[Reply]:
        """The main menu, or for a WhatsApp worker / unknown number what they can do."""
        return await worker.greeting(ctx) or [await menus.main_menu(ctx)]

    # -- global actions ----------------------------------------------------------------

    async def _global(self, ctx: Context, action: str) -> list[Reply]:
        state = ctx.state
        flow = self._flows.get(state.flow) if state.flow else None
        head, _, arg = action.partition(":")
        if head == "start":
            if flow is not None:
                self._park(ctx, flow)
            return [Reply(ctx.t("menu.welcome")), await menus.main_menu(ctx)]
        if head == "menu":
            if flow is not None:
                self._park(ctx, flow)
            return [await menus.main_menu(ctx)]
        if head == "cancel":
            if flow is None:
                return [Reply(ctx.t("flow.nothing_to_cancel")), await menus.main_menu(ctx)]
            had_answers = any(not key.startswith("_") for key in state.data)
            self._park(ctx, flow)
            title = ctx.t(flow.title_key)
            if not had_answers:
                return [Reply(ctx.t("flow.cancelled", title=title)), await menus.main_menu(ctx)]
            # Nothing was sent and nothing is lost: say so, and offer both ways on.
            return [menus.draft_kept(ctx, title)]
        if head == "discard":
            if flow is not None:
                self._park(ctx, flow)
            if not state.draft:
                return [Reply(ctx.t("draft.none")), await menus.main_menu(ctx)]
            title = self._draft_title(ctx)
            state.draft = None
            return [Reply(ctx.t("draft.discarded", title=title)), await menus.main_menu(ctx)]
        if head == "help":
            if flow is not None and state.step:
                step = flow.step(state.step)
                return [Reply(ctx.t(step.help_key)), *await step.ask(ctx)]
            return [Reply(ctx.t("help.general")), await menus.main_menu(ctx)]
        if head == "back":
            if flow is None:
                return [await menus.main_menu(ctx)]
            if not state.history:
                return [Reply(ctx.t("flow.at_first_step")), *await self._reask_or_menu(ctx)]
            self._enter(ctx, state.history.pop())
            state.data.pop("_editing", None)
            assert state.step is not None
            return await flow.step(state.step).ask(ctx)
        if head == "register":
            if await ctx.asn() is not None:
                return [Reply(ctx.t("registration.already_registered")), await menus.main_menu(ctx)]
            return await self._start_flow(ctx, RegistrationFlow.name)
        if head == "enroll":
            if await ctx.asn() is None:
                notice = Reply(ctx.t("enroll.register_first"))
                return [notice, *await self._start_flow(ctx, RegistrationFlow.name)]
            return await self._start_flow(ctx, EnrollmentFlow.name)
        if head == "resume":
            return await self._resume(ctx)
        if head == "fresh" and arg in self._flows:
            state.draft = None
            return await self._start_flow(ctx, arg)
        if head == "fix":
            return await self._start_correction(ctx, arg)
        if head == "plan":
            if await ctx.asn() is None:
                return [Reply(ctx.t("workers.not_registered")), await menus.main_menu(ctx)]
            return await self._start_flow(ctx, PlanChangeFlow.name)
        if head == "pay":
            if await ctx.asn() is None:
                return [Reply(ctx.t("workers.not_registered")), await menus.main_menu(ctx)]
            replies = await self._start_flow(ctx, PaymentFlow.name)
            if state.flow == PaymentFlow.name and not state.history:
                # Recording follows paying: say first where BPJS dues are paid.
                replies.insert(0, Reply(where_to_pay(ctx.t, ctx.config.payment_channels)))
            return replies
        if head == "stop":
            if await ctx.asn() is None:
                return [Reply(ctx.t("workers.not_registered")), await menus.main_menu(ctx)]
            return await self._start_flow(ctx, StopSponsoringFlow.name)
        if head.startswith("pic"):
            return await self._pic_action(ctx, head, arg)
        if head == "ask":
            return await self._start_flow(ctx, AskFlow.name)
        if head == "web":
            return await web_link(ctx)
        if head == "tkr":
            return await self._start_answer(ctx, arg)
        if head in ticket.STAFF_ACTIONS:
            self._park_running(ctx)
            return await ticket.staff_action(ctx, head, arg)
        if head == "erase":
            return await self._start_flow(ctx, EraseFlow.name)
        if head == "clink":
            self._park_running(ctx)
            return await consent.asn_link(ctx, arg)
        if head == "cform":
            self._park_running(ctx)
            return await consent.asn_form(ctx, arg)
        if head in ("consent", "wstatus"):
            if flow is not None:
                self._park(ctx, flow)
            if head == "wstatus":
                return await worker.status(ctx)
            answer, _, sponsorship = arg.partition(":")
            if worker.phone_of(ctx) is None or (
                not sponsorship and not await worker.is_worker(ctx)
            ):
                # "ya" / "tidak" typed by someone who is not a worker: just the menu.
                return [Reply(ctx.t("menu.greeting")), *await self._menu(ctx)]
            # A payload's id that cannot be a record ("consent:yes:²") finds nothing.
            sponsorship_id = (record_id(sponsorship) or -1) if sponsorship else None
            return await worker.answer_consent(ctx, answer == "yes", sponsorship_id)
        if flow is not None:
            self._park(ctx, flow)
        if head == "workers":
            return await menus.my_workers(ctx)
        if head == "info":
            return [menus.info(ctx, arg or None)]
        if head == "language":
            if arg in {lang.value for lang in Language}:
                ctx.account.language = Language(arg)
                ctx.t = self._catalogs.translator(ctx.account.language)
                return [Reply(ctx.t("language.changed")), await menus.main_menu(ctx)]
            return [menus.language_menu(ctx)]
        if head == "helpmenu":
            return [Reply(ctx.t("help.general")), await menus.main_menu(ctx)]
        return [Reply(ctx.t("input.stale_button")), await menus.main_menu(ctx)]

    # -- PIC work and corrections ------------------------------------------------------

    async def _pic_action(self, ctx: Context, head: str, arg: str) -> list[Reply]:
        role = await ctx.pic()
        if role is None:
            return [pic.not_a_pic(ctx), await menus.main_menu(ctx)]
        if head == "pic_queue":
            return await self._start_flow(ctx, VerifyFlow.name)
        if head == "pic_cards":
            return await self._start_flow(ctx, HandoverFlow.name)
        if head == "pic_payments":
            return await self._start_flow(ctx, PaymentsFlow.name)
        self._park_running(ctx)
        if head == "pic_export":
            return await pic.export(ctx, role)
        if head == "pic_submit":
            return await pic.submit(ctx, role, arg)
        if head == "pic_batches":
            return await pic.batches(ctx, role)
        if head == "pic_batch":
            return await pic.resend_batch(ctx, role, arg)
        if head == "pic_import":
            return pic.import_help(ctx)
        if head == "pic_apply":
            return await pic.apply_import(ctx, role, arg)
        if head == "pic_discard":
            return await pic.discard_import(ctx, role, arg)
        if head == "pic_payroll":
            return await pic.payroll_month(ctx, role, arg)
        if head == "pic_payroll_ok":
            return await pic.payroll_confirm(ctx, role, arg)
        if head == "pic_payroll_undo":
            return await pic.payroll_undo(ctx, role, arg)
        if head == "pic_overdue":
            return await pic.overdue(ctx, role)
        return [await pic.home(ctx, role)]

    async def _redeem(self, ctx: Context, code: str) -> list[Reply]:
        """An invite code typed or arriving through a deep link: the person becomes PIC."""
        self._park_running(ctx)
        result = await redeem_invite(
            ctx.repo.connection, code=code, account_id=ctx.account.id, now=ctx.now
        )
        ctx.forget_pic()
        if isinstance(result, InviteProblem):
            return [Reply(ctx.t(f"pic.invite.{result.value}")), await menus.main_menu(ctx)]
        welcome = Reply(ctx.t("pic.invite.welcome", opd=result.opd_name))
        return [welcome, await pic.home(ctx, result)]

    async def _start_answer(self, ctx: Context, arg: str) -> list[Reply]:
        """The PIC's (or administrator's) answer to the question in `arg`."""
        self._park_running(ctx)
        data = await ticket.answer_data(ctx, record_id(arg) or -1)
        if isinstance(data, list):
            return data
        return await self._enter_loaded(ctx, AnswerFlow.name, data)

    async def _open_consent_link(self, ctx: Context, payload: str) -> list[Reply]:
        """A worker opened the consent link the ASN forwarded: the consent question."""
        self._park_running(ctx)
        found = await consent.find_link(ctx, payload)
        if isinstance(found, Reply):
            return [found, await menus.main_menu(ctx)]
        return await self._enter_loaded(ctx, LinkConsentFlow.name, {"link": found})

    async def _start_correction(self, ctx: Context, arg: str) -> list[Reply]:
        self._park_running(ctx)
        loaded = await correction.load(ctx, record_id(arg) or -1)
        if isinstance(loaded, str):
            return [Reply(loaded), *await menus.my_workers(ctx)]
        return await self._enter_loaded(ctx, CorrectionFlow.name, loaded)

    async def _enter_loaded(self, ctx: Context, name: str, data: dict[str, object]) -> list[Reply]:
        """Start flow `name` at its first step with answers already loaded (a returned
        enrollment, a question to answer, a consent link), and ask that step."""
        state = ctx.state
        flow = self._flows[name]
        state.flow = name
        state.data = data
        state.history = []
        self._enter(ctx, flow.steps[0].name)
        # Its buttons, pressed again after it sent something, say so (`_stale_notice`).
        state.data[_SINCE] = state.version
        return await flow.step(state.step or "").ask(ctx)
