"""The Telegram channel: Bot API updates in, `InboundEvent`; `Reply`, Bot API calls out.

Two ways in, both confirming an update only after the engine's transaction committed:

- long polling (`TelegramChannel.run_polling`), our own loop over `getUpdates`,
  because aiogram's `Dispatcher.start_polling` advances the offset as soon as it
  yields an update and swallows handler errors (a failed update would be lost);
- a webhook (`TelegramChannel.webhook_routes`) that answers 200 only after the
  engine returned, so Telegram redelivers when our transaction failed.

A document a person sends is downloaded (getFile, then the file URL of the same
API server) before the engine runs, so no download happens inside a
transaction; a reply's document goes out with sendDocument. Proactive notices
from the outbox go out through `TelegramSender` (scheduler.sending.Sender).

Privacy (PRODUCT 7): logs name updates by id and errors by type; they never carry
message text, phone numbers or callback data, which may hold a NIK.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import io
import logging
import math
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final, Protocol, TypeVar, cast

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.methods import (
    AnswerCallbackQuery,
    DeleteWebhook,
    EditMessageReplyMarkup,
    GetFile,
    GetMe,
    GetUpdates,
    SendDocument,
    SendMessage,
    SendPhoto,
    SetMyCommands,
    SetWebhook,
)
from aiogram.methods.base import Response, TelegramMethod, TelegramType
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
    User,
)
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import log_context, metrics
from bot.delivery import DeliverySettings, ReplyDelivery
from bot.retry_policy import is_transient
from bot.send_deadline import OnTimeConnector
from bot.settings import ReplySettings, TelegramSettings
from domain.vocabulary import Channel, Language
from handlers.commands import typed_event
from handlers.i18n import Catalogs, Translator
from handlers.splitting import shorten, split_text, utf16_length
from handlers.types import (
    ConversationEngine,
    Document,
    EventKind,
    FileRef,
    InboundEvent,
    Option,
    Reply,
)
from scheduler.sending import (
    OutgoingNotice,
    Permanent,
    PlaceMissed,
    RetryAfter,
    SendResult,
    Sent,
    Transient,
)
from storage import telegram_inbound
from storage.crypto import NikCipher
from storage.send_budget import SendBudget
from storage.telegram_inbound import JournaledUpdate

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The update kinds the engine understands; everything else is not even fetched.
#: aiogram parses every answer as `Response[<type>]`; pydantic caches those
#: generic models only weakly, so without a strong reference they are rebuilt
#: after each garbage collection (about 5 ms each, measured in bench/).
_PINNED_RESPONSE_MODELS: tuple[type[Response[Any]], ...] = tuple(
    Response[method.__returning__]  # type: ignore[name-defined]
    for method in (
        SendMessage,
        SendDocument,
        SendPhoto,
        GetFile,
        AnswerCallbackQuery,
        EditMessageReplyMarkup,
        GetUpdates,
        SetMyCommands,
        DeleteWebhook,
        SetWebhook,
        GetMe,
    )
)

ALLOWED_UPDATES: Final = ["message", "callback_query"]
#: Telegram's limit for one message's text (counted in UTF-16 code units).
MAX_TEXT_LENGTH: Final = 4096
#: Telegram's limit for a document's caption (UTF-16 code units).
MAX_CAPTION_LENGTH: Final = 1024
#: Telegram's limit for callback_data.
MAX_CALLBACK_DATA_BYTES: Final = 64
#: Telegram has no documented button-label limit but cuts long labels on phones.
MAX_BUTTON_LABEL: Final = 64
#: Header Telegram sends with the secret given to setWebhook.
SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
#: Journaled polling: updates fetched and not handled yet, at most (then the poller waits).
MAX_UPDATES_IN_HAND: Final = 1000
#: Handled updates' journal rows are deleted together, this long after the first of them.
_FORGET_DELAY_S: Final = 0.05
#: On stop, updates already being handled get this long to finish (the rest stay journaled).
_STOP_GRACE_S: Final = 5.0

#: The command menu per language (names are Telegram's [a-z0-9_]; descriptions
#: come from the catalogue as "command.<name>"). The Indonesian menu offers the
#: Indonesian words, the English one help/cancel; the engine understands all
#: of them in both languages.
_COMMANDS: Final[dict[Language, tuple[str, ...]]] = {
    Language.INDONESIAN: (
        "start", "menu", "daftar", "pekerja", "bayar", "berhenti", "info", "bantuan", "batal",
        "kembali", "bahasa", "tanya",
    ),
    Language.ENGLISH: (
        "start", "menu", "daftar", "pekerja", "bayar", "berhenti", "info", "help", "cancel",
        "kembali", "bahasa", "tanya",
    ),
}  # fmt: skip


class _FetchFailed(Exception):
    """getUpdates failed (logged, and the back-off waited)."""


class UpdateParking(Protocol):
    """Where updates go that the engine failed on repeatedly (storage.dead_letters)."""

    async def park(
        self,
        *,
        channel: Channel,
        update_id: str,
        sender_id: str | None,
        payload: str,
        error_type: str,
        attempts: int,
        now: datetime,
    ) -> None:
        """Store the update durably; raise when that is not possible."""
        ...


class UnreadSendMessage(SendMessage):
    """sendMessage whose answer the program does not read (replies and notices).

    A session with `UnreadAnswers` checks its answer's envelope (a refusal raises as
    for any call) but does not build the sent message into aiogram types (a message
    with a five-button keyboard is nine pydantic models; bench/bench_enrollment.py
    times the answers' parse). The call then returns None.
    """


#: What an accepted `UnreadSendMessage` answers (its result not built).
_ACCEPTED: Final[Response[Any]] = Response[Any](ok=True)


class UnreadAnswers(BaseSession):
    """A session mixin: the answer of an `UnreadSendMessage` is not parsed into types."""

    def check_response(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status_code: int,
        content: str,
    ) -> Response[TelegramType]:
        if isinstance(method, UnreadSendMessage) and HTTPStatus.OK <= status_code < 300:
            try:
                data = self.json_loads(content)
            except Exception:  # not JSON: aiogram's own path raises ClientDecodeError
                data = None
            if isinstance(data, dict) and data.get("ok") is True:
                return cast(Response[TelegramType], _ACCEPTED)
        return super().check_response(bot, method, status_code, content)


class TelegramSession(UnreadAnswers, AiohttpSession):
    """aiogram's HTTP session, without building the answers the program does not read.

    Its connections come from an `OnTimeConnector` (bot/send_deadline.py): a send
    whose connection is ready only after its place in the send budget passed is
    stopped before it is written (`PlaceMissed`), and its sender takes a new place.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "proxy" not in kwargs:  # aiogram's proxy support brings a connector of its own
            self._connector_type = OnTimeConnector


@dataclasses.dataclass(slots=True, frozen=True)
class OutboundMessage:
    """One `sendMessage` call: plain text (no parse mode) and an optional keyboard.

    With `document` it is a `sendDocument` call and `text` its caption (empty:
    none), at most `MAX_CAPTION_LENGTH` long.
    """

    text: str
    reply_markup: InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | None = None
    document: Document | None = None
    #: A file already on Telegram, sent again by its file_id (sendPhoto / sendDocument).
    file: FileRef | None = None

    def to_method(self, chat_id: int) -> SendMessage | SendDocument | SendPhoto:
        """The Bot API call that sends this message to `chat_id`."""
        if self.file is not None:
            if self.file.kind is EventKind.DOCUMENT:
                return SendDocument(chat_id=chat_id, document=self.file.ref)
            return SendPhoto(chat_id=chat_id, photo=self.file.ref)
        if self.document is None:
            return UnreadSendMessage(
                chat_id=chat_id, text=self.text, reply_markup=self.reply_markup
            )
        return SendDocument(
            chat_id=chat_id,
            document=BufferedInputFile(self.document.content, filename=self.document.file_name),
            caption=self.text or None,
            reply_markup=self.reply_markup,
        )


def inline_keyboard(options: Sequence[Option]) -> InlineKeyboardMarkup:
    """One button per row; callback_data is the option id verbatim.

    Raises ValueError when an id does not fit Telegram's 64-byte callback_data.
    """
    rows: list[list[InlineKeyboardButton]] = []
    for option in options:
        if not option.id or len(option.id.encode()) > MAX_CALLBACK_DATA_BYTES:
            raise ValueError(f"option id of {len(option.id.encode())} bytes does not fit")
        label = shorten(option.label, MAX_BUTTON_LABEL)
        rows.append([InlineKeyboardButton(text=label, callback_data=option.id)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def contact_keyboard(t: Translator) -> ReplyKeyboardMarkup:
    """A one-time keyboard with a single share-my-phone-number button."""
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=t("channel.share_contact"), request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


def render_replies(replies: Sequence[Reply], t: Translator) -> list[OutboundMessage]:
    """Turn the engine's replies into sendMessage calls, in order.

    - options become an inline keyboard on the last chunk of the reply's text;
    - `request_contact` becomes a one-time share-contact reply keyboard;
    - the first reply with neither carries `ReplyKeyboardRemove`. This keeps no
      memory of whether a share-contact keyboard is showing: removing a keyboard
      that is not there is a no-op, and a left-over one (the user typed the number
      or cancelled instead of sharing) disappears with the next plain reply. A
      message can carry only one markup, so a reply with inline options never
      removes it.

    A reply with an `attachment` issued by Telegram (a receipt photo) first sends
    it again by its file_id, on its own: should Telegram refuse it, the text still
    follows. A reply with a `document` becomes a sendDocument call first. Its text is the
    caption (with the reply's keyboard on the document message) when it fits
    Telegram's 1024-unit caption limit; a longer text follows as normal
    messages, the keyboard on the last one.

    Empty texts are skipped (Telegram rejects them). Raises ValueError for an
    option id longer than 64 bytes.
    """
    messages: list[OutboundMessage] = []
    removal_pending = True
    for reply in replies:
        markup: InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | None
        if reply.options:
            markup = inline_keyboard(reply.options)
        elif reply.request_contact:
            markup = contact_keyboard(t)
            removal_pending = False
        elif removal_pending:
            markup = ReplyKeyboardRemove()
            removal_pending = False
        else:
            markup = None
        chunks = split_text(reply.text, MAX_TEXT_LENGTH)
        if reply.attachment is not None and reply.attachment.channel is Channel.TELEGRAM:
            messages.append(OutboundMessage("", None, file=reply.attachment))
        if reply.document is not None:
            if len(chunks) <= 1 and utf16_length(reply.text) <= MAX_CAPTION_LENGTH:
                caption = chunks[0] if chunks else ""
                messages.append(OutboundMessage(caption, markup, reply.document))
                continue
            messages.append(OutboundMessage("", None, reply.document))
        if not chunks:
            logger.warning("skipping a reply with empty text")
            continue
        for chunk in chunks[:-1]:
            messages.append(OutboundMessage(chunk))
        messages.append(OutboundMessage(chunks[-1], markup))
    return messages


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class _Backoff:
    """Exponential delays between retries: first, 2*first, ... capped at `cap`."""

    def __init__(self, first: float, cap: float) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._first


def _log_failure(what: str, update_id: int | str, exc: BaseException) -> None:
    """Log an exception by type and stack frames only: its message may quote user data."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error(
        "%s for update %s failed: %s.%s\n%s",
        what,
        update_id,
        type(exc).__module__,
        type(exc).__qualname__,
        frames,
    )


class TelegramReplies:
    """Sends a person's replies as Bot API calls (a `bot.delivery.ReplyTransport`).

    Telegram's 429 concerns one chat here (its one-message-per-second rule): the
    person's replies wait, nobody else's.
    """

    channel: Channel = Channel.TELEGRAM
    channel_wide_rate_limit: bool = False

    def __init__(self, bot: Bot, catalogs: Catalogs, *, timeout_s: float) -> None:
        self._bot = bot
        self._catalogs = catalogs
        self._timeout_s = timeout_s

    def render(self, replies: Sequence[Reply], language: Language) -> list[OutboundMessage]:
        return render_replies(replies, self._catalogs.translator(language))

    async def send(self, chat_id: str, part: OutboundMessage) -> SendResult:
        try:
            # aiogram takes whole seconds; a fraction is rounded up, never to 0 (no limit).
            timeout = max(1, math.ceil(self._timeout_s))
            await self._bot(part.to_method(int(chat_id)), request_timeout=timeout)
        except PlaceMissed:
            raise  # nothing was written: the sender takes a new place (bot/delivery.py)
        except Exception as exc:
            return scrub_token(classify_error(exc), self._bot.token)
        return Sent()


class TelegramChannel:
    """The Telegram adapter around one aiogram `Bot` (the only aiogram user in the program)."""

    def __init__(
        self,
        engine: ConversationEngine,
        settings: TelegramSettings,
        clock: Callable[[], datetime],
        *,
        catalogs: Catalogs | None = None,
        dead_letters: UpdateParking | None = None,
        retry_first_s: float = 1.0,
        retry_cap_s: float = 30.0,
        database: AsyncEngine | None = None,
        cipher: NikCipher | None = None,
        reply_settings: ReplySettings | None = None,
        delivery: DeliverySettings | None = None,
        session: BaseSession | None = None,
        budget: SendBudget | None = None,
        journal: bool | None = None,
    ) -> None:
        """`clock` returns aware UTC datetimes; `retry_*` bound the polling back-off.

        `catalogs` gives the channel's own texts (command menu, share-contact
        button); the composition root passes the engine's, tests may omit it.
        With `dead_letters`, an update that failed `max_update_attempts` times
        (at once when the failure cannot heal: a bug, bad data) is parked there
        and the person told; without it, it is retried forever.

        `database` and `cipher` hold the reply queue (bot/delivery.py): with them
        a reply Telegram refuses for a while is sent again, also after a
        restart; without them (tests with a scripted engine) only while the
        process lives. `reply_settings` (REPLY_*) and `delivery` tune it;
        `budget` paces the replies in the send budget the dispatcher shares.
        `session`: aiogram's seam for every Bot API call (default: HTTP to
        `settings.api_base`; the benchmarks pass one that answers in memory).
        `journal`: long polling records each batch in the inbound journal
        (storage/telegram_inbound.py) and confirms it before handling; default:
        on when `database` and `cipher` are given. Without it a batch is
        confirmed only after all of it was handled.
        """
        if settings.token is None:
            raise ValueError("TELEGRAM_TOKEN is not set")
        self._engine = engine
        self._catalogs = catalogs or Catalogs()
        self._dead_letters = dead_letters
        #: Failed attempts per update id since this process started (transient by
        #: nature: after a restart an update gets its attempts again).
        self._failures: dict[int, int] = {}
        self._callback_answers: set[asyncio.Task[None]] = set()
        self._settings = settings
        self._clock = clock
        self._retry_first_s = retry_first_s
        self._retry_cap_s = retry_cap_s
        self._database = database
        self._cipher = cipher
        self._journal = (
            journal if journal is not None else (database is not None and cipher is not None)
        )
        if self._journal and (database is None or cipher is None):
            raise ValueError("the inbound journal needs `database` and `cipher`")
        #: Journaled polling: each person's fetched updates not handled yet, in order,
        #: and the task handling them (one per person at a time).
        self._in_hand: dict[str, deque[Update]] = {}
        self._handlers: dict[str, asyncio.Task[None]] = {}
        self._in_hand_count = 0
        self._room = asyncio.Event()
        self._room.set()
        self._nothing_in_hand = asyncio.Event()
        self._nothing_in_hand.set()
        #: Handled update ids whose journal rows are not deleted yet.
        self._handled: list[int] = []
        self._forgetter: asyncio.Task[None] | None = None
        session = session or TelegramSession(api=TelegramAPIServer.from_base(settings.api_base))
        # No parse mode: user text (names, addresses) must never be read as HTML.
        self.bot = Bot(
            token=settings.token.get_secret_value(),
            session=session,
            default=DefaultBotProperties(parse_mode=None),
        )
        reply_settings = reply_settings or ReplySettings()
        #: The person's replies: sent at once, retried from the reply queue when refused.
        self.replies = ReplyDelivery(
            TelegramReplies(self.bot, self._catalogs, timeout_s=reply_settings.send_timeout_s),
            database=database,
            cipher=cipher,
            clock=clock,
            settings=delivery or DeliverySettings.from_settings(reply_settings),
            budget=budget,
        )

    # --- updates in -------------------------------------------------------------

    def to_event(self, update: Update) -> InboundEvent | None:
        """The engine's view of an update; None for updates not from a person in a private chat.

        Group and channel messages are ignored: replies go to the person's private
        chat and flows may show personal data.
        """
        if update.message is not None:
            return self._message_event(update.update_id, update.message)
        if update.callback_query is not None:
            return self._callback_event(update.update_id, update.callback_query)
        return None

    @staticmethod
    def _unsupported(update_id: int, user: User, received_at: datetime) -> InboundEvent:
        """The event every kind starts from; UNSUPPORTED until the content is recognised."""
        return InboundEvent(
            channel=Channel.TELEGRAM,
            sender_id=str(user.id),
            update_id=str(update_id),
            kind=EventKind.UNSUPPORTED,
            received_at=received_at,
            display_name=user.full_name,
            language_hint=user.language_code,
        )

    def _message_event(self, update_id: int, message: Message) -> InboundEvent | None:
        user = message.from_user
        if user is None or user.is_bot or message.chat.type != "private":
            return None
        base = self._unsupported(update_id, user, _aware(message.date))
        if message.text is not None:
            return typed_event(base, message.text)
        if message.contact is not None:
            contact = message.contact
            return dataclasses.replace(
                base,
                kind=EventKind.CONTACT,
                contact_phone=contact.phone_number,
                contact_is_own=contact.user_id is not None and contact.user_id == user.id,
            )
        if message.photo:
            largest = max(message.photo, key=lambda size: size.width * size.height)
            return dataclasses.replace(
                base, kind=EventKind.PHOTO, file_ref=largest.file_id, text=message.caption
            )
        if message.document is not None:
            return dataclasses.replace(
                base,
                kind=EventKind.DOCUMENT,
                file_ref=message.document.file_id,
                file_name=message.document.file_name,
                text=message.caption,
            )
        return base

    def _callback_event(self, update_id: int, query: CallbackQuery) -> InboundEvent | None:
        if query.from_user.is_bot:
            return None
        base = self._unsupported(update_id, query.from_user, _aware(self._clock()))
        if query.data is None:  # a game button: nothing the engine issued
            return base
        return dataclasses.replace(base, kind=EventKind.CHOICE, choice_id=query.data)

    async def handle_update(self, update: Update) -> None:
        """Run one update through the engine, then start delivering its replies.

        Engine errors propagate (the update must not be confirmed). The replies
        were stored with the step; they are sent on the person's own task
        (`self.replies`), so this returns without waiting for Telegram, and a
        refused reply is retried from its row without holding anybody else.
        """
        event = self.to_event(update)
        if event is None:
            return
        message = update.message
        if event.kind is EventKind.DOCUMENT and message is not None and message.document:
            event = await self._fetch_document(event, message.document.file_size)
        with (
            log_context.bound(update_id=event.update_id),
            metrics.engine_step(Channel.TELEGRAM),
        ):
            handled = await self._engine.handle_queued(event)
        if update.callback_query is not None:
            # Stops the button's spinner. The pressed keyboard is left as it is:
            # removing it would cost one more Bot API call per tap against the
            # bot's shared rate budget, and the engine answers a press on an old
            # question's button with "that button is no longer valid".
            self._answer_callback(update.update_id, update.callback_query.id)
        self.replies.submit(event.sender_id, handled, event.update_id)

    async def _fetch_document(self, event: InboundEvent, size: int | None) -> InboundEvent:
        """The event with the document's bytes, or `file_too_large` over the size limit.

        Download errors propagate like engine errors: the update is retried,
        and parked after too many attempts.
        """
        assert event.file_ref is not None
        limit = self._settings.max_file_bytes
        too_large = dataclasses.replace(event, file_too_large=True)
        if size is not None and size > limit:
            return too_large
        try:
            file = await self.bot.get_file(event.file_ref)
        except TelegramBadRequest as exc:
            if "too big" in exc.message.lower():  # over the Bot API's 20 MB download limit
                return too_large
            raise
        if file.file_size is not None and file.file_size > limit:
            return too_large
        if not file.file_path:
            raise RuntimeError("getFile returned no file_path")
        buffer = io.BytesIO()
        await self.bot.download_file(file.file_path, destination=buffer)
        content = buffer.getvalue()
        if len(content) > limit:
            return too_large
        return dataclasses.replace(event, file_content=content)

    async def _handle_or_park(self, update: Update) -> None:
        """`handle_update`, parking the update once it has failed too often.

        Raises while the update should be retried (also when parking fails:
        nothing is dropped without a durable copy).
        """
        try:
            await self.handle_update(update)
        except Exception as exc:
            attempts = self._failures.get(update.update_id, 0) + 1
            self._failures[update.update_id] = attempts
            if self._dead_letters is None:
                raise
            # Only a failure that can heal (the database or the network away) is
            # worth a retry; any other would fail the same way each time, and
            # retrying it would hold everybody in the batch.
            if is_transient(exc) and attempts < self._settings.max_update_attempts:
                raise
            await self._park(update, exc, attempts)
        self._failures.pop(update.update_id, None)

    async def _park(self, update: Update, exc: BaseException, attempts: int) -> None:
        assert self._dead_letters is not None
        event = self.to_event(update)
        sender = event.sender_id if event is not None else None
        await self._dead_letters.park(
            channel=Channel.TELEGRAM,
            update_id=str(update.update_id),
            sender_id=sender,
            payload=update.model_dump_json(exclude_none=True),
            error_type=type(exc).__name__,
            attempts=attempts,
            now=self._clock(),
        )
        logger.error("update %s parked after %s failed attempts", update.update_id, attempts)
        metrics.count_parked(Channel.TELEGRAM)
        if update.callback_query is not None:
            self._answer_callback(update.update_id, update.callback_query.id)
        if sender is None:
            return
        language = Language.INDONESIAN
        with contextlib.suppress(Exception):  # the database may be the reason it failed
            language = await self._engine.language_of(Channel.TELEGRAM, sender)
        text = self._catalogs.translator(language)("input.update_parked")
        try:
            await self.replies.send_now(
                sender, [Reply(text)], language, f"parked:{update.update_id}"
            )
        except Exception as exc:  # parked already: the notice is what may be missing
            _log_failure("queueing the parking notice", update.update_id, exc)

    # --- replies out ------------------------------------------------------------

    def _answer_callback(self, update_id: int, query_id: str) -> None:
        """Answer a button press on a task of its own: one try, nobody waits for it.

        Not queued: Telegram accepts an answer only for a few seconds, and the
        replies that follow say everything the person needs.
        """
        task = asyncio.ensure_future(self._answer_once(update_id, query_id))
        self._callback_answers.add(task)
        task.add_done_callback(self._callback_answers.discard)

    async def _answer_once(self, update_id: int, query_id: str) -> None:
        try:
            await self.bot(AnswerCallbackQuery(callback_query_id=query_id))
        except Exception as exc:
            logger.info("update %s: answerCallbackQuery failed: %s", update_id, type(exc).__name__)

    # --- long polling -----------------------------------------------------------

    async def run_polling(self, stop: asyncio.Event | None = None) -> None:
        """Fetch and handle updates until `stop` is set.

        Updates of one sender run in order, never two at once; different
        senders run concurrently. With the journal (the default with a
        database) a batch is recorded in it and confirmed by fetching the next
        at once, while its updates are handled; updates a crash left in the
        journal are handled first. Without it, an update is confirmed (the next
        getUpdates offset passes it) only after every update of its batch was
        handled; when handling fails, the same offset is fetched again after a
        back-off, so committed updates come back and the engine drops them as
        replays.
        """
        stop = stop if stop is not None else asyncio.Event()
        sweep = asyncio.create_task(self.replies.run(stop))
        try:
            await self._poll(stop)
        finally:
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep
            await self._stop_handlers()

    async def _delete_webhook(self, stop: asyncio.Event, backoff: _Backoff) -> None:
        while not stop.is_set():
            try:
                await self._until_stopped(self.bot.delete_webhook(drop_pending_updates=False), stop)
                break
            except TelegramUnauthorizedError:
                raise  # a wrong token does not heal by retrying
            except TelegramAPIError as exc:
                logger.warning("deleteWebhook failed: %s", type(exc).__name__)
                await self._sleep(backoff.next(), stop)
        backoff.reset()

    async def _fetch(
        self, offset: int | None, stop: asyncio.Event, backoff: _Backoff
    ) -> list[Update] | None:
        """One getUpdates; None when stopped. A failure is logged and backed off, then
        raises `_FetchFailed`."""
        timeout = self._settings.polling_timeout_s
        try:
            updates = await self._until_stopped(
                self.bot.get_updates(
                    offset=offset,
                    timeout=timeout,
                    allowed_updates=list(ALLOWED_UPDATES),
                    request_timeout=timeout + 10,
                ),
                stop,
            )
        except TelegramUnauthorizedError:
            raise
        except TelegramAPIError as exc:
            logger.warning("getUpdates failed: %s", type(exc).__name__)
            await self._sleep(backoff.next(), stop)
            raise _FetchFailed from exc
        return updates

    async def _confirm(self, offset: int | None, confirmed: int | None) -> None:
        """Confirm what was handled since the last fetch, fetching nothing new."""
        if offset is not None and offset != confirmed:
            with contextlib.suppress(TelegramAPIError, asyncio.TimeoutError):
                await asyncio.wait_for(self.bot.get_updates(offset=offset, limit=1, timeout=0), 5)

    async def _poll(self, stop: asyncio.Event) -> None:
        """Fetch until stopped; each batch is journaled (or, without the journal, handled)
        before the next fetch confirms it. A batch that failed is fetched again."""
        backoff = _Backoff(self._retry_first_s, self._retry_cap_s)
        await self._delete_webhook(stop, backoff)
        if self._journal:
            await self._resume_journal(stop, backoff)
        accept = self._journal_batch if self._journal else self._handle_batch
        offset: int | None = None
        confirmed: int | None = None
        while not stop.is_set():
            if not self._room.is_set():  # journaled: too many updates in hand
                await self._until_stopped(self._room.wait(), stop)
                continue
            try:
                updates = await self._fetch(offset, stop, backoff)
            except _FetchFailed:
                continue
            if updates is None:
                break
            confirmed = offset
            if not updates:
                backoff.reset()
                continue
            try:
                await accept(updates)
            except Exception as exc:
                delay = backoff.next()
                logger.warning(
                    "batch of %s updates fetched again in %.1fs: %s",
                    len(updates),
                    delay,
                    type(exc).__name__,
                )
                await self._sleep(delay, stop)
                continue
            offset = max(update.update_id for update in updates) + 1
            backoff.reset()
        if self._journal:
            await self._finish_handlers()
        await self._confirm(offset, confirmed)

    # --- long polling through the inbound journal ---------------------------------

    async def _resume_journal(self, stop: asyncio.Event, backoff: _Backoff) -> None:
        """Take in hand what a crash or a stop left in the journal, before anything new."""
        while not stop.is_set():
            try:
                left = await self._journal_pending()
            except Exception as exc:
                logger.warning("the inbound journal is unreadable: %s", type(exc).__name__)
                await self._sleep(backoff.next(), stop)
                continue
            if left:
                logger.info("%s journaled updates from before handled first", len(left))
            for update in left:
                self._take_in_hand(update)
            break
        backoff.reset()

    async def _journal_batch(self, updates: Sequence[Update]) -> None:
        """Record the batch (then the next fetch may confirm it) and hand its new updates
        to their senders' tasks; raises when it was not recorded."""
        fresh = await self._journal_record(updates)
        for update in sorted(updates, key=lambda u: u.update_id):
            if update.update_id in fresh:
                self._take_in_hand(update)

    async def _journal_record(self, updates: Sequence[Update]) -> set[int]:
        assert self._database is not None and self._cipher is not None
        entries = [
            JournaledUpdate(update.update_id, update.model_dump_json(exclude_none=True))
            for update in updates
        ]
        async with self._database.begin() as connection:
            return await telegram_inbound.record(
                connection, entries, cipher=self._cipher, now=self._clock()
            )

    async def _journal_pending(self) -> list[Update]:
        assert self._database is not None and self._cipher is not None
        async with self._database.connect() as connection:
            rows = await telegram_inbound.pending(connection, cipher=self._cipher)
        return [Update.model_validate_json(row.payload, context={"bot": self.bot}) for row in rows]

    def _take_in_hand(self, update: Update) -> None:
        """Queue `update` behind its sender's others; start their handler if none runs."""
        key = self._sender_key(update)
        self._in_hand.setdefault(key, deque()).append(update)
        self._in_hand_count += 1
        self._nothing_in_hand.clear()
        if self._in_hand_count >= MAX_UPDATES_IN_HAND:
            self._room.clear()
        if key not in self._handlers:
            self._handlers[key] = asyncio.create_task(self._handle_sender(key))

    async def _handle_sender(self, key: str) -> None:
        """One sender's updates in order; a failed one is tried again after a back-off."""
        queue = self._in_hand[key]
        backoff = _Backoff(self._retry_first_s, self._retry_cap_s)
        try:
            while queue:
                update = queue[0]
                try:
                    await self._handle_or_park(update)
                except Exception as exc:
                    _log_failure("handling", update.update_id, exc)
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                queue.popleft()
                self._in_hand_count -= 1
                self._forget_later(update.update_id)
                self._update_room()
        finally:
            # Cancelled: what is left stays journaled for the next start.
            self._in_hand_count -= len(queue)
            del self._in_hand[key]
            del self._handlers[key]
            self._update_room()

    def _update_room(self) -> None:
        if self._in_hand_count < MAX_UPDATES_IN_HAND:
            self._room.set()
        if not self._in_hand:
            self._nothing_in_hand.set()

    async def settled(self) -> None:
        """Wait until every fetched update was handled, its journal row deleted and its
        replies delivered (tests)."""
        await self._nothing_in_hand.wait()
        forgetter = self._forgetter
        if forgetter is not None and not forgetter.done():
            await asyncio.shield(forgetter)
        await self.replies.drain()

    def _forget_later(self, update_id: int) -> None:
        self._handled.append(update_id)
        if self._forgetter is None or self._forgetter.done():
            self._forgetter = asyncio.create_task(self._forget_loop())

    async def _forget_loop(self) -> None:
        """Delete handled updates' rows, those handled meanwhile together (a few DELETEs a
        second, not one per update). A crash in between hands them to the engine again,
        which finds them claimed and does nothing."""
        assert self._database is not None
        failures = 0
        while self._handled:
            await asyncio.sleep(_FORGET_DELAY_S if not failures else min(2**failures, 30))
            batch = list(self._handled)
            try:
                async with self._database.begin() as connection:
                    await telegram_inbound.forget(connection, batch)
            except Exception as exc:
                failures += 1
                logger.warning(
                    "handled updates not deleted from the journal yet: %s", type(exc).__name__
                )
                continue
            failures = 0
            del self._handled[: len(batch)]

    async def _finish_handlers(self) -> None:
        """On stop: the updates being handled get a moment to finish, and the journal rows
        of the handled ones are deleted (what is left is handled at the next start)."""
        handlers = list(self._handlers.values())
        if handlers:
            await asyncio.wait(handlers, timeout=_STOP_GRACE_S)
        await self._cancel_handlers()
        forgetter = self._forgetter
        if forgetter is not None and not forgetter.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(forgetter), _STOP_GRACE_S)

    async def _cancel_handlers(self) -> None:
        tasks = list(self._handlers.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop_handlers(self) -> None:
        """Cancel the handlers still running (their updates stay journaled) and the deletes."""
        await self._cancel_handlers()
        forgetter = self._forgetter
        if forgetter is not None and not forgetter.done():
            forgetter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forgetter

    async def _handle_batch(self, updates: Sequence[Update]) -> None:
        """Handle one batch; raises the first failure after every chain settled."""
        chains: dict[str, list[Update]] = {}
        for update in sorted(updates, key=lambda u: u.update_id):
            chains.setdefault(self._sender_key(update), []).append(update)
        results = await asyncio.gather(
            *(self._handle_chain(chain) for chain in chains.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _handle_chain(self, chain: Sequence[Update]) -> None:
        """One sender's updates strictly in order; stops at the first failure."""
        for update in chain:
            try:
                await self._handle_or_park(update)
            except Exception as exc:
                _log_failure("handling", update.update_id, exc)
                raise

    @staticmethod
    def _sender_key(update: Update) -> str:
        user: User | None = None
        if update.message is not None:
            user = update.message.from_user
        elif update.callback_query is not None:
            user = update.callback_query.from_user
        return f"user:{user.id}" if user is not None else f"update:{update.update_id}"

    @staticmethod
    async def _until_stopped(call: Awaitable[_T], stop: asyncio.Event) -> _T | None:
        """Await `call`, or cancel it and return None as soon as `stop` is set."""
        task = asyncio.ensure_future(call)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    @staticmethod
    async def _sleep(delay: float, stop: asyncio.Event) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    # --- webhook ----------------------------------------------------------------

    def webhook_routes(self, app: web.Application) -> None:
        """Register POST `settings.webhook_path` on `app`.

        401 without side effects for a missing or wrong secret header, 400 for a
        body that is not an update, 500 when the engine failed (Telegram retries),
        200 once the engine committed. Raises ValueError when no secret is set.
        """
        if self._settings.webhook_secret is None:
            raise ValueError("TELEGRAM_WEBHOOK_SECRET is required in webhook mode")
        app.router.add_post(self._settings.webhook_path, self._on_webhook)

    async def _on_webhook(self, request: web.Request) -> web.Response:
        secret = self._settings.webhook_secret
        given = request.headers.get(SECRET_HEADER)
        if (
            secret is None
            or given is None
            or not hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
        ):
            logger.warning("webhook request refused: bad secret token from %s", request.remote)
            return web.Response(status=401)
        try:
            payload = await request.json()
            update = Update.model_validate(payload, context={"bot": self.bot})
        except (ValueError, ValidationError):
            # ValidationError is a ValueError; both named for the reader.
            logger.warning("webhook request refused: body is not an update")
            return web.Response(status=400)
        try:
            await self._handle_or_park(update)
        except Exception as exc:
            _log_failure("webhook handling", update.update_id, exc)
            return web.Response(status=500)
        return web.Response(status=200)

    async def set_webhook(self) -> None:
        """Point Telegram at `settings.webhook_url` with the secret token."""
        secret = self._settings.webhook_secret
        if not self._settings.webhook_url or secret is None:
            raise ValueError("TELEGRAM_WEBHOOK_URL and TELEGRAM_WEBHOOK_SECRET are required")
        await self.bot.set_webhook(
            url=self._settings.webhook_url,
            secret_token=secret.get_secret_value(),
            allowed_updates=list(ALLOWED_UPDATES),
            drop_pending_updates=False,
        )

    # --- lifecycle --------------------------------------------------------------

    async def username(self) -> str:
        """The bot's username as Telegram knows it (getMe), for t.me/<username> links."""
        me = await self.bot.get_me()
        return me.username or ""

    async def set_commands(self) -> None:
        """Publish the command menu: Indonesian by default, English for "en" clients."""
        for language, names in _COMMANDS.items():
            t = self._catalogs.translator(language)
            await self.bot.set_my_commands(
                commands=[
                    BotCommand(command=name, description=t(f"command.{name}")) for name in names
                ],
                language_code=None if language is Language.INDONESIAN else language.value,
            )

    async def close(self) -> None:
        """Hand back the replies still waiting (the next start sends them), close the session."""
        await self.replies.close()
        for task in list(self._callback_answers):
            task.cancel()
        await self.bot.session.close()


# --- proactive notices -------------------------------------------------------------


def classify_error(exc: Exception) -> SendResult:
    """What an exception from a Bot API call means for an outbox row.

    429 -> `RetryAfter` (the whole channel pauses); an answer that is not the Bot
    API's (an HTML error page from a proxy) -> `Transient`, but a success whose
    result did not parse -> `Sent` (Telegram has the message); blocked by the user, chat not
    found and other refusals of the request itself -> `Permanent`; network
    errors, timeouts, 5xx, and a rejected token (a configuration error that a
    fixed token heals) -> `Transient`.
    """
    if isinstance(exc, ClientDecodeError):
        data = exc.data
        if isinstance(data, dict) and data.get("ok") is True:
            # Telegram accepted the call; only its answer did not parse. Sending
            # again would deliver the message twice.
            logger.warning("%s: accepted, but the answer did not parse", type(exc).__name__)
            return Sent()
        return Transient(f"{type(exc).__name__}: not a Bot API answer")  # a proxy's error page
    if isinstance(exc, TelegramRetryAfter):
        return RetryAfter(float(exc.retry_after), error=f"429: {exc.message}")
    if isinstance(exc, TelegramUnauthorizedError):
        return Transient(f"{type(exc).__name__}: {exc.message}")
    if isinstance(exc, TelegramForbiddenError):
        return Permanent(f"{type(exc).__name__}: {exc.message}", recipient_gone=True)
    if isinstance(exc, TelegramBadRequest) and "chat not found" in exc.message.lower():
        return Permanent(f"{type(exc).__name__}: {exc.message}", recipient_gone=True)
    if isinstance(exc, TelegramBadRequest | TelegramNotFound | TelegramMigrateToChat):
        return Permanent(f"{type(exc).__name__}: {exc.message}")
    if isinstance(exc, TelegramAPIError):
        return Transient(f"{type(exc).__name__}: {exc.message}")
    if isinstance(exc, TimeoutError):
        return Transient("timeout")
    return Transient(type(exc).__name__)


class TelegramSender:
    """Delivers outbox notices as plain-text Bot API messages (a `scheduler.sending.Sender`).

    A body longer than Telegram's 4096 units is split with `split_text`; the
    parts go out `chunk_interval_s` apart (Telegram's one message per second
    per chat) and `message_count` tells the dispatcher how many rate slots the
    notice takes. When a later part fails, a retry sends the earlier parts
    again: long notices are rare and a repeated part is better than a lost one.
    """

    channel: Channel = Channel.TELEGRAM

    def __init__(
        self,
        bot: Bot,
        *,
        chunk_interval_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._bot = bot
        self._chunk_interval_s = chunk_interval_s
        self._sleep = sleep

    def message_count(self, notice: OutgoingNotice) -> int:
        """How many sendMessage calls `notice` takes."""
        return max(1, len(split_text(notice.body, MAX_TEXT_LENGTH)))

    async def send(self, notice: OutgoingNotice) -> SendResult:
        """Send `notice.body` to the chat `notice.recipient`; never raises for send errors."""
        try:
            chat_id = int(notice.recipient)
        except ValueError:
            return Permanent("recipient is not a Telegram chat id")
        chunks = split_text(notice.body, MAX_TEXT_LENGTH)
        if not chunks:
            return Permanent("empty body")
        for index, chunk in enumerate(chunks):
            if index:
                await self._sleep(self._chunk_interval_s)
            try:
                await self._bot(UnreadSendMessage(chat_id=chat_id, text=chunk))
            except PlaceMissed:
                raise  # nothing was written: the dispatcher takes a new place
            except Exception as exc:
                return scrub_token(classify_error(exc), self._bot.token)
        return Sent()


def scrub_token(result: SendResult, token: str) -> SendResult:
    """The result with the bot token removed from its text (network errors may quote URLs)."""
    if isinstance(result, RetryAfter | Transient | Permanent) and token in result.error:
        return dataclasses.replace(result, error=result.error.replace(token, "<token>"))
    return result
