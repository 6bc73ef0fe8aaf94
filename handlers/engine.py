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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.vocabulary import Channel, Language
from handlers import actions, menus
from handlers.context import (
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
from handlers.flows.worker import EraseFlow
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
from storage.roles import InviteProblem, PicRole, redeem_invite

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Slash commands (Telegram; typed "/bayar" on every channel) and the actions they ask for.
COMMANDS: dict[str, actions.Action] = {
    "start": actions.Start(),
    "menu": actions.Menu(),
    "daftar": actions.Enroll(),
    "pekerja": actions.Workers(),
    "info": actions.Info(),
    "bantuan": actions.Help(),
    "help": actions.Help(),
    "batal": actions.Cancel(),
    "cancel": actions.Cancel(),
    "kembali": actions.Back(),
    "back": actions.Back(),
    "bahasa": actions.ChooseLanguage(),
    "language": actions.ChooseLanguage(),
    "pic": actions.PicHome(),
    "bayar": actions.Pay(),
    "tanya": actions.Ask(),
    "admin": actions.AdminHome(),
    "berhenti": actions.StopSponsoring(),
    "web": actions.WebLink(),
}
#: Words that act at any step (PRODUCT 4: batal, menu, bantuan; plus kembali).
FLOW_WORDS: dict[str, actions.Action] = {
    "batal": actions.Cancel(),
    "cancel": actions.Cancel(),
    "menu": actions.Menu(),
    "bantuan": actions.Help(),
    "help": actions.Help(),
    "kembali": actions.Back(),
    "back": actions.Back(),
}
#: Extra words understood when no flow is running (WhatsApp users type words, not commands).
IDLE_WORDS: dict[str, actions.Action] = {
    **FLOW_WORDS,
    "daftar": actions.Enroll(),
    "pekerja": actions.Workers(),
    "info": actions.Info(),
    "bahasa": actions.ChooseLanguage(),
    "language": actions.ChooseLanguage(),
    "mulai": actions.Start(),
    "start": actions.Start(),
    "pic": actions.PicHome(),
    "bayar": actions.Pay(),
    "tanya": actions.Ask(),
    "admin": actions.AdminHome(),
    "berhenti": actions.StopSponsoring(),
    # The worker's words on WhatsApp (PRODUCT 4.6); for anyone else they lead to the menu.
    "ya": actions.Consent("yes"),
    "tidak": actions.Consent("no"),
    "status": actions.WorkerStatus(),
    "hapus": actions.Erase(),
}
#: Key in an idle conversation's data: what the flow that just ended sent (`Done.sent_key`)
#: and the versions of its questions.
_SENT = "_sent"
#: Key in a running flow's data: the version of its first question (kept with a draft).
_SINCE = "_since"
#: A typed PIC invite code ("PIC-7K3QX9AB"; the prefix is optional with the dash).
_INVITE_CODE = re.compile(r"^\s*pic[-\s]?([a-z0-9]{8})\s*$", re.IGNORECASE | re.ASCII)


A = TypeVar("A", bound=actions.Action)
#: What an action does: the engine, the event's context, the action (its guard passed).
Handler: TypeAlias = Callable[["Engine", Context, A], Awaitable[list[Reply]]]
#: What a malformed or forged payload of an action says (its guard passed).
ForgedHandler: TypeAlias = Callable[["Engine", Context], Awaitable[list[Reply]]]
#: The action table: one handler per action class (`_on`), filled as the class is defined.
_ROUTES: dict[type[actions.Action], Handler[Any]] = {}
_FORGED: dict[type[actions.Action], ForgedHandler] = {}


def _on(kind: type[A]) -> Callable[[Handler[A]], Handler[A]]:
    """Register the engine method below as the handler of action class `kind`."""

    def register(handler: Handler[A]) -> Handler[A]:
        if kind in _ROUTES:
            raise TypeError(f"two handlers for {kind.__name__}")
        _ROUTES[kind] = handler
        return handler

    return register


def _forged(kind: type[actions.Action]) -> Callable[[ForgedHandler], ForgedHandler]:
    """Register what a malformed payload of `kind` says (default: "no longer valid")."""

    def register(handler: ForgedHandler) -> ForgedHandler:
        _FORGED[kind] = handler
        return handler

    return register


class _LostBeforeClaim(Exception):
    """The step's connection was found dead at its first statement (tried once more)."""


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
            try:
                return await self._transaction(event, queue, reading, retry=True)
            except _LostBeforeClaim as lost:
                # Pooled connections are not pinged (storage.db): one the server closed
                # fails the step's first statement. Nothing of the update was written;
                # once more, on a fresh connection.
                log.warning(
                    "database connection lost before update %s/%s, trying again: %s",
                    event.channel,
                    event.update_id,
                    type(lost.__cause__).__name__,
                )
            return await self._transaction(event, queue, reading, retry=False)

    async def _transaction(
        self, event: InboundEvent, queue: bool, reading: FileReading | None, *, retry: bool
    ) -> QueuedReplies:
        # Closed explicitly: `async with engine.connect()` runs close() in a task
        # of its own, an extra event-loop round on every event (bench/).
        connection = await self._database.connect()
        try:
            async with connection.begin():
                now = self._clock()
                store = await conversation_store(connection)
                try:
                    claimed = await store.claim(event.channel, event.update_id, now)
                except DBAPIError as error:
                    if retry and error.connection_invalidated:
                        raise _LostBeforeClaim from error
                    raise
                if not claimed:
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
            account_created=record.created,
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
            command = COMMANDS.get((event.command or "").lower())
            if command is None:
                notice = ctx.t("input.unknown_command", command=f"/{event.command}")
                return [Reply(notice), *await self._reask_or_menu(ctx)]
            return await self._act(ctx, command)

        payload = event.choice_id or ""
        if event.kind is EventKind.CHOICE and (
            payload.startswith(actions.GLOBAL_PREFIX) or actions.lookup(payload) is not None
        ):
            # A menu button, or the consent template's quick reply ("consent:yes:<id>"):
            # valid whenever it arrives.
            return await self._act_on_payload(ctx, payload)

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
            word = words.get(normalise(text))
            if word is not None:
                return await self._act(ctx, word)

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
        # The options read the answer; the question's text is needed only to ask again.
        # A step whose text costs much to render (the summary) gives its options alone.
        question: list[Reply] | None = None
        cheap = await step.options(ctx)
        if cheap is None:
            question = await step.ask(ctx)
            options = question[-1].options if question else ()
        else:
            options = cheap

        async def again(notice_key: str) -> list[Reply]:
            asked = question if question is not None else await step.ask(ctx)
            return [Reply(ctx.t(notice_key)), *asked]

        keys = {opt.id.split(":", 1)[1]: opt for opt in options if ":" in opt.id}

        if event.out_of_order:
            # Taking it would answer a later question with an earlier answer.
            return await again("input.out_of_order")
        answer: Answer
        if event.kind is EventKind.CHOICE:
            version, _, key = (event.choice_id or "").partition(":")
            if version != str(state.version) or key not in keys:
                return await again("input.stale_button")
            answer = Answer(kind=EventKind.CHOICE, choice=key)
        elif event.kind is EventKind.TEXT:
            text = (event.text or "").strip()
            if not text:
                return await again("input.empty")
            choice = match_option(text, options, by_position=not step.numbers_are_values)
            if choice is None and options and not step.free_text:
                return await again("input.choose_option")
            answer = Answer(kind=EventKind.TEXT, text=text, choice=choice)
        elif event.kind is EventKind.CONTACT:
            answer = Answer(
                kind=EventKind.CONTACT,
                contact_phone=event.contact_phone,
                contact_is_own=event.contact_is_own,
            )
        elif event.kind in (EventKind.PHOTO, EventKind.DOCUMENT):
            if not step.accepts_files:
                return await again("input.file_not_needed")
            answer = Answer(kind=event.kind, file_ref=event.file_ref)
        elif step.accepts_files:
            # A sticker or voice note where a photo or file is asked for: the step says
            # what it wants (the generic text would ask for text instead).
            answer = Answer(kind=EventKind.UNSUPPORTED)
        else:
            return await again("input.unsupported")

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
        """Where `flow` returns when it ends, empties or fails (`Flow.leave`)."""
        return await flow.leave(ctx)

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

    # -- actions -----------------------------------------------------------------------
    # One handler per action class (`handlers.actions`), registered with `_on`; the
    # guard the class declares is checked once, in `_act`, before its handler runs.

    async def _act_on_payload(self, ctx: Context, payload: str) -> list[Reply]:
        """A pressed menu button or template quick reply: its action, guarded."""
        kind = actions.lookup(payload)
        if kind is None:
            return await self._stale(ctx)
        refusal = await self._refusal(ctx, kind.guard)
        if refusal is not None:
            return refusal
        action = kind.unpack(payload)
        if action is None:
            # Forged, or cut by a client: said as for a record that does not exist.
            forged = _FORGED.get(kind)
            return await forged(self, ctx) if forged is not None else await self._stale(ctx)
        return await _ROUTES[kind](self, ctx, action)

    async def _act(self, ctx: Context, action: actions.Action) -> list[Reply]:
        """A typed command or word: its action, guarded."""
        refusal = await self._refusal(ctx, action.guard)
        if refusal is not None:
            return refusal
        return await _ROUTES[type(action)](self, ctx, action)

    async def _refusal(self, ctx: Context, guard: actions.Guard) -> list[Reply] | None:
        """Why this person may not use an action with `guard` (and their menu), or None."""
        G = actions.Guard
        if guard is G.ANYONE:
            return None
        if guard is G.ASN and await ctx.asn() is None:
            return [Reply(ctx.t("workers.not_registered")), *await self._menu(ctx)]
        if guard is G.PIC and await ctx.pic() is None:
            return [pic.not_a_pic(ctx), *await self._menu(ctx)]
        if guard is G.ADMIN and await ticket.admin_scope(ctx) is None:
            return [Reply(ctx.t("admin.only")), *await self._menu(ctx)]
        if guard is G.STAFF and await ctx.pic() is None and await ticket.admin_scope(ctx) is None:
            return [pic.not_a_pic(ctx), *await self._menu(ctx)]
        if guard is G.WORKER and worker.phone_of(ctx) is None:
            return [Reply(ctx.t("worker.whatsapp_only")), *await self._menu(ctx)]
        return None

    async def _stale(self, ctx: Context) -> list[Reply]:
        """A button that asks for nothing this version knows: the menu."""
        self._park_running(ctx)
        return [Reply(ctx.t("input.stale_button")), await menus.main_menu(ctx)]

    async def _role(self, ctx: Context) -> PicRole:
        """The PIC's appointment; only called behind `Guard.PIC`."""
        role = await ctx.pic()
        assert role is not None, "a PIC action ran without its guard"
        return role

    # -- moving around -------------------------------------------------------------------

    @_on(actions.Start)
    async def _on_start(self, ctx: Context, action: actions.Start) -> list[Reply]:
        self._park_running(ctx)
        return [Reply(ctx.t("menu.welcome")), await menus.main_menu(ctx)]

    @_on(actions.Menu)
    async def _on_menu(self, ctx: Context, action: actions.Menu) -> list[Reply]:
        self._park_running(ctx)
        return [await menus.main_menu(ctx)]

    @_on(actions.Cancel)
    async def _on_cancel(self, ctx: Context, action: actions.Cancel) -> list[Reply]:
        state = ctx.state
        flow = self._flows.get(state.flow) if state.flow else None
        if flow is None:
            return [Reply(ctx.t("flow.nothing_to_cancel")), await menus.main_menu(ctx)]
        had_answers = any(not key.startswith("_") for key in state.data)
        self._park(ctx, flow)
        title = ctx.t(flow.title_key)
        if not had_answers:
            return [Reply(ctx.t("flow.cancelled", title=title)), await menus.main_menu(ctx)]
        # Nothing was sent and nothing is lost: say so, and offer both ways on.
        return [menus.draft_kept(ctx, title)]

    @_on(actions.Discard)
    async def _on_discard(self, ctx: Context, action: actions.Discard) -> list[Reply]:
        self._park_running(ctx)
        if not ctx.state.draft:
            return [Reply(ctx.t("draft.none")), await menus.main_menu(ctx)]
        title = self._draft_title(ctx)
        ctx.state.draft = None
        return [Reply(ctx.t("draft.discarded", title=title)), await menus.main_menu(ctx)]

    @_on(actions.Help)
    async def _on_help(self, ctx: Context, action: actions.Help) -> list[Reply]:
        state = ctx.state
        flow = self._flows.get(state.flow) if state.flow else None
        if flow is not None and state.step:
            step = flow.step(state.step)
            return [Reply(ctx.t(step.help_key)), *await step.ask(ctx)]
        return [Reply(ctx.t("help.general")), await menus.main_menu(ctx)]

    @_on(actions.HelpMenu)
    async def _on_help_menu(self, ctx: Context, action: actions.HelpMenu) -> list[Reply]:
        self._park_running(ctx)
        return [Reply(ctx.t("help.general")), await menus.main_menu(ctx)]

    @_on(actions.Back)
    async def _on_back(self, ctx: Context, action: actions.Back) -> list[Reply]:
        state = ctx.state
        flow = self._flows.get(state.flow) if state.flow else None
        if flow is None:
            return [await menus.main_menu(ctx)]
        if not state.history:
            return [Reply(ctx.t("flow.at_first_step")), *await self._reask_or_menu(ctx)]
        self._enter(ctx, state.history.pop())
        state.data.pop("_editing", None)
        assert state.step is not None
        return await flow.step(state.step).ask(ctx)

    @_on(actions.Resume)
    async def _on_resume(self, ctx: Context, action: actions.Resume) -> list[Reply]:
        return await self._resume(ctx)

    @_on(actions.Fresh)
    async def _on_fresh(self, ctx: Context, action: actions.Fresh) -> list[Reply]:
        if action.flow not in self._flows:
            return await self._stale(ctx)
        ctx.state.draft = None
        return await self._start_flow(ctx, action.flow)

    @_on(actions.Info)
    async def _on_info(self, ctx: Context, action: actions.Info) -> list[Reply]:
        self._park_running(ctx)
        return [menus.info(ctx, action.topic)]

    @_on(actions.ChooseLanguage)
    async def _on_language(self, ctx: Context, action: actions.ChooseLanguage) -> list[Reply]:
        self._park_running(ctx)
        if action.language is None:
            return [menus.language_menu(ctx)]
        ctx.account.language = action.language
        ctx.t = self._catalogs.translator(ctx.account.language)
        return [Reply(ctx.t("language.changed")), await menus.main_menu(ctx)]

    # -- the ASN -------------------------------------------------------------------------

    @_on(actions.Register)
    async def _on_register(self, ctx: Context, action: actions.Register) -> list[Reply]:
        if await ctx.asn() is not None:
            return [Reply(ctx.t("registration.already_registered")), await menus.main_menu(ctx)]
        return await self._start_flow(ctx, RegistrationFlow.name)

    @_on(actions.Enroll)
    async def _on_enroll(self, ctx: Context, action: actions.Enroll) -> list[Reply]:
        if await ctx.asn() is None:
            notice = Reply(ctx.t("enroll.register_first"))
            return [notice, *await self._start_flow(ctx, RegistrationFlow.name)]
        return await self._start_flow(ctx, EnrollmentFlow.name)

    @_on(actions.Workers)
    async def _on_workers(self, ctx: Context, action: actions.Workers) -> list[Reply]:
        self._park_running(ctx)
        return await menus.my_workers(ctx)

    @_on(actions.ChangePlan)
    async def _on_plan(self, ctx: Context, action: actions.ChangePlan) -> list[Reply]:
        return await self._start_flow(ctx, PlanChangeFlow.name)

    @_on(actions.Pay)
    async def _on_pay(self, ctx: Context, action: actions.Pay) -> list[Reply]:
        replies = await self._start_flow(ctx, PaymentFlow.name)
        if ctx.state.flow == PaymentFlow.name and not ctx.state.history:
            # Recording follows paying: say first where BPJS dues are paid.
            replies.insert(0, Reply(where_to_pay(ctx.t, ctx.config.payment_channels)))
        return replies

    @_on(actions.StopSponsoring)
    async def _on_stop(self, ctx: Context, action: actions.StopSponsoring) -> list[Reply]:
        return await self._start_flow(ctx, StopSponsoringFlow.name)

    @_on(actions.Fix)
    async def _on_fix(self, ctx: Context, action: actions.Fix) -> list[Reply]:
        return await self._start_correction(ctx, action.sponsorship)

    @_forged(actions.Fix)
    async def _forged_fix(self, ctx: Context) -> list[Reply]:
        self._park_running(ctx)
        return [Reply(ctx.t("fix.not_found")), *await menus.my_workers(ctx)]

    @_on(actions.ConsentLink)
    async def _on_consent_link(self, ctx: Context, action: actions.ConsentLink) -> list[Reply]:
        self._park_running(ctx)
        return await consent.asn_link(ctx, action.sponsorship)

    @_on(actions.ConsentForm)
    async def _on_consent_form(self, ctx: Context, action: actions.ConsentForm) -> list[Reply]:
        self._park_running(ctx)
        return await consent.asn_form(ctx, action.sponsorship)

    @_forged(actions.ConsentLink)
    @_forged(actions.ConsentForm)
    async def _forged_consent_way(self, ctx: Context) -> list[Reply]:
        self._park_running(ctx)
        return consent.not_yours(ctx)

    @_on(actions.Ask)
    async def _on_ask(self, ctx: Context, action: actions.Ask) -> list[Reply]:
        return await self._start_flow(ctx, AskFlow.name)

    @_on(actions.WebLink)
    async def _on_web_link(self, ctx: Context, action: actions.WebLink) -> list[Reply]:
        self._park_running(ctx)
        return await web_link(ctx)

    # -- the worker ----------------------------------------------------------------------

    @_on(actions.Consent)
    async def _on_consent(self, ctx: Context, action: actions.Consent) -> list[Reply]:
        self._park_running(ctx)
        if worker.phone_of(ctx) is None or (
            action.sponsorship is None and not await worker.is_worker(ctx)
        ):
            # "ya" / "tidak" typed by someone who is not a worker: just the menu.
            return [Reply(ctx.t("menu.greeting")), *await self._menu(ctx)]
        return await worker.answer_consent(ctx, action.answer == "yes", action.sponsorship)

    @_forged(actions.Consent)
    async def _forged_consent(self, ctx: Context) -> list[Reply]:
        self._park_running(ctx)
        if worker.phone_of(ctx) is None:
            return [Reply(ctx.t("menu.greeting")), *await self._menu(ctx)]
        return await worker.no_consent_request(ctx)

    @_on(actions.WorkerStatus)
    async def _on_worker_status(self, ctx: Context, action: actions.WorkerStatus) -> list[Reply]:
        self._park_running(ctx)
        return await worker.status(ctx)

    @_on(actions.Erase)
    async def _on_erase(self, ctx: Context, action: actions.Erase) -> list[Reply]:
        return await self._start_flow(ctx, EraseFlow.name)

    # -- the PIC -------------------------------------------------------------------------

    @_on(actions.PicHome)
    async def _on_pic_home(self, ctx: Context, action: actions.PicHome) -> list[Reply]:
        self._park_running(ctx)
        return [await pic.home(ctx, await self._role(ctx))]

    @_on(actions.PicQueue)
    async def _on_pic_queue(self, ctx: Context, action: actions.PicQueue) -> list[Reply]:
        return await self._start_flow(ctx, VerifyFlow.name)

    @_on(actions.PicCards)
    async def _on_pic_cards(self, ctx: Context, action: actions.PicCards) -> list[Reply]:
        return await self._start_flow(ctx, HandoverFlow.name)

    @_on(actions.PicPayments)
    async def _on_pic_payments(self, ctx: Context, action: actions.PicPayments) -> list[Reply]:
        return await self._start_flow(ctx, PaymentsFlow.name)

    @_on(actions.PicExport)
    async def _on_pic_export(self, ctx: Context, action: actions.PicExport) -> list[Reply]:
        self._park_running(ctx)
        return await pic.export(ctx, await self._role(ctx))

    @_on(actions.PicSubmit)
    async def _on_pic_submit(self, ctx: Context, action: actions.PicSubmit) -> list[Reply]:
        self._park_running(ctx)
        return await pic.submit(ctx, await self._role(ctx), action.batch)

    @_on(actions.PicBatches)
    async def _on_pic_batches(self, ctx: Context, action: actions.PicBatches) -> list[Reply]:
        self._park_running(ctx)
        return await pic.batches(ctx, await self._role(ctx))

    @_on(actions.PicBatch)
    async def _on_pic_batch(self, ctx: Context, action: actions.PicBatch) -> list[Reply]:
        self._park_running(ctx)
        return await pic.resend_batch(ctx, await self._role(ctx), action.batch)

    @_forged(actions.PicSubmit)
    @_forged(actions.PicBatch)
    async def _forged_batch(self, ctx: Context) -> list[Reply]:
        self._park_running(ctx)
        return pic.not_found(ctx, "pic.batch.not_found")

    @_on(actions.PicImport)
    async def _on_pic_import(self, ctx: Context, action: actions.PicImport) -> list[Reply]:
        self._park_running(ctx)
        return pic.import_help(ctx)

    @_on(actions.PicApply)
    async def _on_pic_apply(self, ctx: Context, action: actions.PicApply) -> list[Reply]:
        self._park_running(ctx)
        return await pic.apply_import(ctx, await self._role(ctx), action.upload)

    @_on(actions.PicDiscard)
    async def _on_pic_discard(self, ctx: Context, action: actions.PicDiscard) -> list[Reply]:
        self._park_running(ctx)
        return await pic.discard_import(ctx, await self._role(ctx), action.upload)

    @_forged(actions.PicApply)
    @_forged(actions.PicDiscard)
    async def _forged_import(self, ctx: Context) -> list[Reply]:
        self._park_running(ctx)
        return pic.not_found(ctx, "pic.import.not_found")

    @_on(actions.PicPayroll)
    async def _on_pic_payroll(self, ctx: Context, action: actions.PicPayroll) -> list[Reply]:
        self._park_running(ctx)
        return await pic.payroll_month(ctx, await self._role(ctx), action.month)

    @_on(actions.PicPayrollConfirm)
    async def _on_pic_payroll_confirm(
        self, ctx: Context, action: actions.PicPayrollConfirm
    ) -> list[Reply]:
        self._park_running(ctx)
        return await pic.payroll_confirm(ctx, await self._role(ctx), action.month, action.count)

    @_on(actions.PicPayrollUndo)
    async def _on_pic_payroll_undo(
        self, ctx: Context, action: actions.PicPayrollUndo
    ) -> list[Reply]:
        self._park_running(ctx)
        return await pic.payroll_undo(ctx, await self._role(ctx), action.month)

    @_forged(actions.PicPayroll)
    @_forged(actions.PicPayrollConfirm)
    @_forged(actions.PicPayrollUndo)
    async def _forged_payroll(self, ctx: Context) -> list[Reply]:
        self._park_running(ctx)
        return pic.not_found(ctx, "pic.payroll.invalid")

    @_on(actions.PicOverdue)
    async def _on_pic_overdue(self, ctx: Context, action: actions.PicOverdue) -> list[Reply]:
        self._park_running(ctx)
        return await pic.overdue(ctx, await self._role(ctx))

    # -- questions and the administrator -------------------------------------------------

    @_on(actions.PicTickets)
    async def _on_pic_tickets(self, ctx: Context, action: actions.PicTickets) -> list[Reply]:
        self._park_running(ctx)
        return await ticket.pic_list(ctx)

    @_on(actions.AdminTickets)
    async def _on_admin_tickets(self, ctx: Context, action: actions.AdminTickets) -> list[Reply]:
        self._park_running(ctx)
        return await ticket.admin_list(ctx)

    @_on(actions.AdminHome)
    async def _on_admin_home(self, ctx: Context, action: actions.AdminHome) -> list[Reply]:
        self._park_running(ctx)
        return await ticket.admin_home(ctx)

    @_on(actions.TicketShow)
    async def _on_ticket_show(self, ctx: Context, action: actions.TicketShow) -> list[Reply]:
        self._park_running(ctx)
        return await ticket.show(ctx, action.ticket)

    @_on(actions.TicketClose)
    async def _on_ticket_close(self, ctx: Context, action: actions.TicketClose) -> list[Reply]:
        self._park_running(ctx)
        return await ticket.close(ctx, action.ticket)

    @_on(actions.TicketAnswer)
    async def _on_ticket_answer(self, ctx: Context, action: actions.TicketAnswer) -> list[Reply]:
        return await self._start_answer(ctx, action.ticket)

    @_forged(actions.TicketShow)
    @_forged(actions.TicketClose)
    @_forged(actions.TicketAnswer)
    async def _forged_ticket(self, ctx: Context) -> list[Reply]:
        self._park_running(ctx)
        return await ticket.not_found(ctx)

    # -- invites, answers, consent links and corrections --------------------------------

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

    async def _start_answer(self, ctx: Context, ticket_id: int) -> list[Reply]:
        """The PIC's (or administrator's) answer to question `ticket_id`."""
        self._park_running(ctx)
        data = await ticket.answer_data(ctx, ticket_id)
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

    async def _start_correction(self, ctx: Context, sponsorship_id: int) -> list[Reply]:
        self._park_running(ctx)
        loaded = await correction.load(ctx, sponsorship_id)
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


_UNROUTED = set(actions.every_action()) - set(_ROUTES)
if _UNROUTED:
    raise TypeError(f"actions without a handler: {sorted(k.__name__ for k in _UNROUTED)}")
