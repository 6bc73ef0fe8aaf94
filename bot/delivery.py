"""Replies to people, delivered at once, in order per person, and again after a refusal.

The engine writes a step's replies to the reply queue in the step's own
transaction (`Engine.handle_queued`, storage/reply_queue.py). The channel then
hands them to `ReplyDelivery.submit`, which sends them right away on a task of
that person's own, so nobody waits for anybody else's reply:

- each reply is rendered into the platform's messages (`ReplyTransport.render`)
  and sent one by one; the row remembers how many went out (`parts_sent`), so
  a retry continues with the next message instead of repeating them;
- a transient refusal (5xx, an HTML error page, a timeout, a refused
  connection, Telegram's 429, WhatsApp's 130429 or 131000) keeps the row with
  its next try; the person's task waits (backing off, or for `retry_after`)
  and tries again, while every other person's replies go on. WhatsApp's
  130429 concerns our number, so it pauses the whole channel; Telegram's 429
  pauses only that chat;
- a permanent refusal of one message (Telegram 400) skips that message:
  retrying cannot help; when the person cannot be reached at all (Telegram
  403 blocked or chat not found, WhatsApp 131026) the row's other messages
  are not tried either;
- once every message of a row went out, the row is deleted, together with
  the others delivered within `flush_delay_s` (one DELETE, off the reply
  path). A crash after a send and before that delete sends that reply again
  after a restart: at least once, never lost;
- each message takes its place in the channel's send budget, and is written
  only if its connection was ready in time for it (bot/send_deadline.py);
  otherwise it takes one new place and goes then;
- a reply older than `max_age` is dropped with a log line (WhatsApp refuses
  free text after 24 hours anyway, and a day-old answer misleads more than it
  helps).

A person's replies keep their order: a new row goes behind the rows this
process already holds for them; when rows held by another process (or left by
a crashed one) wait for the same person, the new row is handed back and
`run`'s sweep takes the person's rows in id order once they are free.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot import metrics
from bot.settings import ReplySettings
from domain.vocabulary import Channel, Language
from handlers.types import QueuedReplies, Reply, decode_replies, encode_replies
from scheduler.sending import (
    Deferred,
    Permanent,
    PlaceMissed,
    RetryAfter,
    SendResult,
    Sent,
    Transient,
    write_by,
)
from storage import reply_queue
from storage.conversation_store import conversation_store
from storage.crypto import NikCipher
from storage.db import side_pool
from storage.send_budget import LATE_PLACE_S, Granted, SendBudget, start_on_time

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Deleted rows remembered: far more than can be deleted while one event's transaction
#: runs (a few per second per person at most).
_FORGOTTEN_KEPT = 10_000


class ReplyTransport(Protocol):
    """One platform's way of sending replies (bot/telegram.py, bot/whatsapp/render.py)."""

    channel: Channel
    #: True when the platform's rate limit holds our whole sender (WhatsApp 130429:
    #: the business number), False when it concerns one chat (Telegram's 429).
    channel_wide_rate_limit: bool

    def render(self, replies: Sequence[Reply], language: Language) -> Sequence[Any]:
        """The platform messages for `replies`, in order (pure; may raise for a bad reply)."""
        ...

    async def send(self, chat_id: str, part: Any) -> SendResult:
        """Send one rendered message; never raises for platform or network errors."""
        ...


#: The reply queue's own connections per process (`ReplyDelivery._books`), kept open: the
#: sweep, the renewals, the deletes and the failures recorded share them. No overflow: an
#: overflow connection is opened and closed per use, and with 1 kept + 1 a province of two
#: processes opened 329 connections in 10 s of bench_cluster (p99 at 70 %: 370 ms).
BOOKKEEPING_POOL: Final = 2
BOOKKEEPING_OVERFLOW: Final = 0


@dataclasses.dataclass(slots=True, frozen=True)
class DeliverySettings:
    """How replies are retried (REPLY_* settings)."""

    #: The first retry's delay; it doubles per attempt up to `retry_cap`.
    retry_first: timedelta = timedelta(seconds=1)
    retry_cap: timedelta = timedelta(seconds=60)
    #: A reply not delivered within this time is dropped (logged).
    max_age: timedelta = timedelta(hours=24)
    #: How long this process holds a row it works on before another may take it.
    lease: timedelta = timedelta(seconds=30)
    #: `run` looks for rows nobody holds this often.
    sweep_s: float = 1.0
    #: Rows taken over per sweep.
    claim_limit: int = 100
    #: Delivered rows are deleted together this long after the first of them went out.
    flush_delay_s: float = 0.2

    @classmethod
    def from_settings(cls, reply: ReplySettings) -> DeliverySettings:
        """The REPLY_* settings (the sweep's pace by default)."""
        return cls(
            retry_first=timedelta(seconds=reply.retry_first_s),
            retry_cap=timedelta(seconds=reply.retry_cap_s),
            max_age=timedelta(hours=reply.max_age_hours),
            lease=timedelta(seconds=reply.lease_s),
        )


@dataclasses.dataclass(slots=True)
class _Item:
    """One queued row (or, without a database, one event's replies) on its way."""

    reply_id: int | None
    update_id: str
    replies: Sequence[Reply]
    language: Language
    parts_sent: int
    attempts: int
    created_at: datetime


class ReplyDelivery:
    """Sends queued replies for one channel; see the module docstring."""

    def __init__(
        self,
        transport: ReplyTransport,
        *,
        database: AsyncEngine | None,
        cipher: NikCipher | None,
        clock: Clock,
        settings: DeliverySettings | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        budget: SendBudget | None = None,
    ) -> None:
        """Without `database` nothing is stored (engines without a queue, in tests): a
        refused reply is still retried while the process lives. `budget`: the channel's
        send budget shared with the outbox dispatcher (and the other processes); each
        message takes its place first, ahead of the dispatcher's. None: not paced."""
        self._transport = transport
        self._database = database
        #: The reply queue's own few connections (PostgreSQL; SQLite: `database`): its
        #: claims, lease renewals and deletes do not queue behind the engine's steps
        #: (storage.db.side_pool); under load they timed out there, leases ran out and
        #: other processes sent replies again.
        self._books = (
            side_pool(database, size=BOOKKEEPING_POOL, overflow=BOOKKEEPING_OVERFLOW)
            if database is not None
            else None
        )
        self._cipher = cipher
        self._clock = clock
        self._settings = settings or DeliverySettings()
        self._sleep = sleep
        self._budget = budget
        #: Messages whose connection was ready after their place (`_send_part`).
        self.places_missed = 0
        self._chats: dict[str, collections.deque[_Item]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        #: Delivered rows not yet deleted (their delete is batched).
        self._delivered: list[int] = []
        self._delivered_ids: set[int] = set()
        self._flusher: asyncio.Task[None] | None = None
        #: Renews the leases of the rows held here while any are (`_renew_loop`).
        self._renewer: asyncio.Task[None] | None = None
        self._flush_now = asyncio.Event()
        #: The latest deleted rows (bounded): see `_waiting_elsewhere`.
        self._forgotten: collections.deque[int] = collections.deque()
        self._forgotten_ids: set[int] = set()
        self._paused_until = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def channel(self) -> Channel:
        return self._transport.channel

    # --- in -----------------------------------------------------------------------

    def submit(self, chat_id: str, handled: QueuedReplies, update_id: str) -> None:
        """Start delivering `handled` to `chat_id` behind the replies already on their way."""
        if not handled.replies:
            return
        if self._waiting_elsewhere(chat_id, handled.earlier):
            # Replies held elsewhere (another process, or left by an earlier run) go
            # first: hand this row back for `run` to take in order.
            if handled.reply_id is not None:
                self._spawn(self._release([handled.reply_id]))
            return
        self._enqueue(
            chat_id,
            _Item(
                reply_id=handled.reply_id,
                update_id=update_id,
                replies=handled.replies,
                language=handled.language,
                parts_sent=0,
                attempts=0,
                created_at=self._clock(),
            ),
        )

    async def send_now(
        self, chat_id: str, replies: Sequence[Reply], language: Language, update_id: str
    ) -> None:
        """Queue replies that no engine step wrote (a notice about a parked update) and
        deliver them like the others. Raises when they cannot be stored."""
        handled = QueuedReplies(replies, language)
        if self._database is not None and self._cipher is not None:
            now = self._clock()
            payload = self._cipher.encrypt_payload(encode_replies(replies, language))
            async with self._books_begin() as connection:
                store = await conversation_store(connection)
                reply_id, earlier = await store.queue_replies(
                    self.channel,
                    chat_id,
                    update_id,
                    payload,
                    now=now,
                    lease_until=now + self._settings.lease,
                )
            handled = QueuedReplies(replies, language, reply_id, earlier)
        self.submit(chat_id, handled, update_id)

    # --- the background sweep -------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Take over rows nobody holds (a crashed process's, handed-back ones) until `stop`."""
        failures = 0
        while not stop.is_set():
            try:
                await self.sweep_once()
                failures = 0
            except Exception as exc:  # the database is away: try again later
                failures += 1
                logger.warning("%s reply queue not readable: %s", self.channel, type(exc).__name__)
            delay = self._settings.sweep_s * min(2**failures, 30)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def sweep_once(self) -> int:
        """Claim the rows nobody holds and start delivering them; returns how many."""
        if self._database is None or self._cipher is None:
            return 0
        async with self._books_begin() as connection:
            claimed = await reply_queue.claim(
                connection,
                self.channel,
                now=self._clock(),
                lease=self._settings.lease,
                limit=self._settings.claim_limit,
                skip_chats=list(self._chats),
            )
        for row in claimed:
            try:
                replies, language = decode_replies(
                    self._cipher.decrypt_payload(row.payload_ciphertext)
                )
            except Exception as exc:
                logger.error("reply %s unreadable, dropped: %s", row.id, type(exc).__name__)
                self._mark_delivered(row.id)
                continue
            self._enqueue(
                row.chat_id,
                _Item(
                    reply_id=row.id,
                    update_id=row.update_id,
                    replies=replies,
                    language=language,
                    parts_sent=row.parts_sent,
                    attempts=row.attempts,
                    created_at=row.created_at,
                ),
            )
        return len(claimed)

    async def idle(self) -> None:
        """Wait until every reply this process holds went out (or was given up)."""
        await self._idle.wait()

    async def drain(self) -> None:
        """`idle`, then delete the delivered rows now instead of at the next batch."""
        await self._idle.wait()
        self._flush_now.set()
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        """Stop delivering: rows still held are handed back for the next process."""
        held = [
            item.reply_id
            for queue in self._chats.values()
            for item in queue
            if item.reply_id is not None
        ]
        renewer = [self._renewer] if self._renewer is not None else []
        for task in [*self._tasks.values(), *self._background, *renewer]:
            task.cancel()
        for task in [*self._tasks.values(), *self._background, *renewer]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        with contextlib.suppress(Exception):
            await self._flush()
            await self._release(held)
        if self._books is not None and self._books is not self._database:
            await self._books.dispose()

    def _books_begin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A transaction on the reply queue's own connections."""
        assert self._books is not None
        return self._books.begin()

    # --- per person ---------------------------------------------------------------------

    def _waiting_elsewhere(self, chat_id: str, earlier: Sequence[int]) -> bool:
        """Whether a row of `earlier` is one this process neither holds, nor delivered, nor
        deleted lately (an event's transaction may have seen a row deleted before its
        replies got here). Without a database nothing is stored elsewhere."""
        if not earlier or self._database is None:
            return False
        queued = {item.reply_id for item in self._chats.get(chat_id, ())}
        return any(
            reply_id not in queued
            and reply_id not in self._delivered_ids
            and reply_id not in self._forgotten_ids
            for reply_id in earlier
        )

    def _enqueue(self, chat_id: str, item: _Item) -> None:
        queue = self._chats.setdefault(chat_id, collections.deque())
        queue.append(item)
        if chat_id not in self._tasks:
            self._idle.clear()
            self._tasks[chat_id] = asyncio.create_task(self._run_chat(chat_id))
        if item.reply_id is not None and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.create_task(self._renew_loop())

    def _held(self) -> list[int]:
        """The rows this process holds: on their way, or delivered and not yet deleted."""
        on_their_way = [
            item.reply_id
            for queue in self._chats.values()
            for item in queue
            if item.reply_id is not None
        ]
        return [*on_their_way, *self._delivered]

    async def renew_once(self) -> int:
        """Extend the lease of every row held here to a full lease from now."""
        held = self._held()
        if not held or self._database is None:
            return 0
        async with self._books_begin() as connection:
            return await reply_queue.renew(
                connection, held, until=self._clock() + self._settings.lease
            )

    async def _renew_loop(self) -> None:
        """While rows are held, renew their leases every third of the lease (real time):
        a reply waiting longer than the lease is not taken over by another process's
        sweep and sent twice. A process that dies stops renewing: its rows are taken
        over one lease later, as before."""
        interval = self._settings.lease.total_seconds() / 3
        failures = 0
        while self._held():
            await asyncio.sleep(interval)
            try:
                await self.renew_once()
                failures = 0
            except Exception as exc:  # the database is away: the next round tries again
                failures += 1
                logger.warning(
                    "%s reply leases not renewed (%s times): %s",
                    self.channel,
                    failures,
                    type(exc).__name__,
                )

    async def _run_chat(self, chat_id: str) -> None:
        queue = self._chats[chat_id]
        try:
            while queue:
                item = queue[0]
                sent = await self._deliver(chat_id, item)
                queue.popleft()
                if item.reply_id is not None:
                    self._mark_delivered(item.reply_id)
                if sent:  # after the row is marked: its delete is not held by the budget
                    await self._note_replied(chat_id, sent)
        finally:
            del self._chats[chat_id]
            del self._tasks[chat_id]
            if not self._tasks:
                self._idle.set()

    async def _deliver(self, chat_id: str, item: _Item) -> int:
        """Send `item` until every part went out, it was refused for good, or it is too old;
        returns how many messages went out when all did (else 0)."""
        try:
            parts = self._transport.render(item.replies, item.language)
        except Exception as exc:  # a rendering bug must not block the person's later replies
            logger.error("update %s: replies not rendered: %s", item.update_id, type(exc).__name__)
            return 0
        while True:
            await self._wait_for_channel()
            result: SendResult = Sent()
            while item.parts_sent < len(parts):
                result = await self._send_part(chat_id, parts[item.parts_sent])
                metrics.count_send(self._transport.channel, "reply", result)
                if isinstance(result, Permanent):
                    logger.warning(
                        "update %s: reply part refused for good: %s", item.update_id, result.error
                    )
                    if result.recipient_gone:
                        return 0  # blocked, or the number cannot receive: the rest cannot help
                elif not isinstance(result, Sent):
                    break
                item.parts_sent += 1
            else:
                return len(parts)
            item.attempts += 1
            now = self._clock()
            if now - item.created_at > self._settings.max_age:
                logger.error(
                    "update %s: reply dropped after %s attempts over %s",
                    item.update_id,
                    item.attempts,
                    self._settings.max_age,
                )
                return 0
            delay, error = self._retry_delay(result, item.attempts)
            if isinstance(result, RetryAfter) and self._transport.channel_wide_rate_limit:
                await self._pause_budget(result.seconds)
            logger.warning(
                "update %s: reply refused (%s), attempt %s, again in %.1fs",
                item.update_id,
                error,
                item.attempts,
                delay,
            )
            if item.reply_id is not None:
                await self._record_failure(item, now + timedelta(seconds=delay), error)
            await self._sleep(delay)

    def _retry_delay(self, result: SendResult, attempts: int) -> tuple[float, str]:
        if isinstance(result, RetryAfter):
            if self._transport.channel_wide_rate_limit:
                loop = asyncio.get_running_loop()
                self._paused_until = max(self._paused_until, loop.time() + result.seconds)
            return result.seconds, result.error
        if isinstance(result, Deferred):
            return result.seconds, result.error
        assert isinstance(result, Transient)
        first = self._settings.retry_first.total_seconds()
        cap = self._settings.retry_cap.total_seconds()
        backoff = min(first * 2 ** (attempts - 1), cap)
        return backoff * random.uniform(0.8, 1.2), result.error

    async def _send_part(self, chat_id: str, part: Any) -> SendResult:
        """Send one message in its place in the send budget. A transport whose connection
        was ready only after the place passed (`PlaceMissed`, bot/send_deadline.py: a
        new connection on a busy loop) wrote nothing; the message takes a new place and
        goes then, whatever the lateness (its connection now waits in the pool)."""
        deadline = await self._take_place()
        if deadline is not None:
            try:
                with write_by(deadline):
                    return await self._transport.send(chat_id, part)
            except PlaceMissed as missed:
                self.places_missed += 1
                logger.debug("%s reply: %s; a new place", self.channel, missed)
                await self._take_place()
        return await self._transport.send(chat_id, part)

    async def _take_place(self) -> float | None:
        """Wait for this message's place in the channel's send budget (replies go first:
        the dispatcher only takes places close to now); a place whose start passed while
        this process stalled is taken anew (`start_on_time`). Returns when the message
        must be written by (`time.monotonic()`), None without a budget."""
        if self._budget is None:
            return None
        try:
            took = await self._budget.take(self.channel)
            if isinstance(took, Granted):
                await start_on_time(self._budget, self.channel, took.wait_s, sleep=self._sleep)
        except Exception as exc:  # the database is away: a reply is not held up for it
            logger.warning("%s send budget not reachable: %s", self.channel, type(exc).__name__)
            return None
        return time.monotonic() + LATE_PLACE_S

    async def _note_replied(self, chat_id: str, count: int) -> None:
        """Keep the outbox's notices to this person one interval per message after the
        reply (the platform counts a chat's messages, whichever path sent them)."""
        if self._budget is None:
            return
        try:
            await self._budget.replied(self.channel, chat_id, count)
        except Exception as exc:
            logger.warning("%s reply not noted in the budget: %s", self.channel, type(exc).__name__)

    async def _pause_budget(self, seconds: float) -> None:
        """Share a channel-wide pause (WhatsApp 130429) with the dispatcher and the others."""
        if self._budget is None:
            return
        try:
            await self._budget.pause(self.channel, seconds)
        except Exception as exc:
            logger.warning("%s pause not shared: %s", self.channel, type(exc).__name__)

    async def _wait_for_channel(self) -> None:
        """Wait while the whole channel is paused (WhatsApp 130429)."""
        loop = asyncio.get_running_loop()
        while (wait := self._paused_until - loop.time()) > 0:
            await self._sleep(wait)

    async def _record_failure(self, item: _Item, retry_at: datetime, error: str) -> None:
        assert item.reply_id is not None and self._database is not None
        try:
            async with self._books_begin() as connection:
                await reply_queue.record_failure(
                    connection,
                    item.reply_id,
                    parts_sent=item.parts_sent,
                    attempts=item.attempts,
                    retry_at=retry_at,
                    lease=self._settings.lease,
                    error=error,
                )
        except Exception as exc:  # the row keeps its lease; the retry goes on from memory
            logger.warning("reply %s: failure not recorded: %s", item.reply_id, type(exc).__name__)

    # --- bookkeeping off the reply path -------------------------------------------

    def _mark_delivered(self, reply_id: int) -> None:
        self._delivered.append(reply_id)
        self._delivered_ids.add(reply_id)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        failures = 0
        while self._delivered:
            # Gather the rows delivered meanwhile into one DELETE: at any rate that is a
            # few statements a second, not one per reply (a crash in between re-sends them).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self._settings.flush_delay_s)
            try:
                await self._flush()
                failures = 0
            except Exception as exc:
                failures += 1
                logger.warning("delivered replies not deleted yet: %s", type(exc).__name__)
                await self._sleep(min(2**failures, 30))
        self._flush_now.clear()

    async def _flush(self) -> None:
        """Delete the delivered rows (those delivered meanwhile go in the next round)."""
        if not self._delivered or self._database is None:
            self._delivered.clear()
            self._delivered_ids.clear()
            return
        batch = list(self._delivered)
        async with self._books_begin() as connection:
            await reply_queue.forget(connection, batch)
        del self._delivered[: len(batch)]
        self._delivered_ids.difference_update(batch)
        self._forgotten.extend(batch)
        self._forgotten_ids.update(batch)
        while len(self._forgotten) > _FORGOTTEN_KEPT:
            self._forgotten_ids.discard(self._forgotten.popleft())

    async def _release(self, reply_ids: Sequence[int]) -> None:
        if not reply_ids or self._database is None:
            return
        try:
            async with self._books_begin() as connection:
                await reply_queue.release(connection, reply_ids)
        except Exception as exc:  # the lease runs out instead
            logger.warning("replies not handed back: %s", type(exc).__name__)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
