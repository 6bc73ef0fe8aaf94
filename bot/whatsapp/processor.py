"""Feeds the WhatsApp journal to the engine: per sender in order, at least once.

`InboundProcessor.run` loops until stopped: it claims recorded messages
(storage.whatsapp_inbound.claim), runs each sender's messages strictly in
order (different senders concurrently), and for each message:

1. decodes the journal payload into an `InboundEvent` (bot.whatsapp.events);
2. for a document, fetches its bytes through the `MediaFetcher` first, so no
   download happens inside the engine's transaction (None from the fetcher:
   too large, the engine says so);
3. `await engine.handle(event)`: one transaction, deduplicated by the message
   id itself;
4. hands the replies, which the engine stored with the step, to the
   `ReplyDelivery` (bot/delivery.py): sent at once on the person's own task,
   and again from their row while Meta refuses them (130429, 131000, 5xx);
5. marks the rows processed (one UPDATE per claimed batch).

A failure in 1-3 that may heal (bot/retry_policy.py: the database or the
network away) counts an attempt and holds the message (and with it its
sender's later messages) for a back-off that doubles per attempt; after
`max_update_attempts`, or at once for a failure that cannot heal (a bug, data
the code cannot handle), the message is parked in `failed_update` (payload
encrypted), the person is told (`input.update_parked`, as on Telegram) and
the sender's next messages go on. If parking fails, the message is retried:
nothing leaves the journal without a durable copy.

A crash between the engine's commit and step 5 replays the message after the
lease: the engine recognises its id and returns nothing, and the replies it
stored the first time are in the reply queue, sent by whichever process
takes them over.

The webhook calls `wake()` after recording; other processes (several bot
processes on PostgreSQL) find the rows by polling every `idle_s`. A sender's
messages wait `hold` after the newest of them arrived (storage.whatsapp_inbound:
applied in the order sent, not delivered); the loop then looks again when the
earliest hold ends.

Pacing: a wake-up waits `settle_s` so the messages of a burst share one claim
and one bookkeeping UPDATE, and one engine step runs at a time by default
(`engine_concurrency`; senders still run concurrently around it, so slow
reply sends overlap). On SQLite the steps share the one connection with the
webhook, and steps queued ahead of a journal write delay Meta's 200: at 200
requests/s its p99 was 0.6-0.8 s with two steps at once, 9-53 ms with one
(bench/bench_whatsapp_webhook.py, a shared 2-core machine). On PostgreSQL a
higher `engine_concurrency` may pay off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from bot import log_context, metrics
from bot.settings import WhatsAppSettings
from bot.whatsapp.errors import is_transient_update
from bot.whatsapp.events import to_event
from domain.vocabulary import Channel, Language
from handlers.i18n import Catalogs
from handlers.types import ConversationEngine, EventKind, InboundEvent, QueuedReplies, Reply
from storage.crypto import NikCipher
from storage.whatsapp_inbound import (
    ClaimedMessage,
    claim,
    hold_ends,
    mark_all_processed,
    mark_failed,
    mark_processed,
    release,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class ReplySink(Protocol):
    """What the processor needs of `bot.delivery.ReplyDelivery` (a benchmark drops them)."""

    def submit(self, chat_id: str, handled: QueuedReplies, update_id: str) -> None:
        """Start delivering a step's stored replies to `chat_id`, in order."""
        ...

    async def send_now(
        self, chat_id: str, replies: Sequence[Reply], language: Language, update_id: str
    ) -> None:
        """Store and deliver replies no step wrote. Raises when they cannot be stored."""
        ...


class MediaFetcher(Protocol):
    """Downloads a person's media (Graph API: the media URL, then its bytes)."""

    async def fetch(self, media_id: str, max_bytes: int) -> bytes | None:
        """The file's bytes; None when it is larger than `max_bytes`. Raises when it cannot."""
        ...


class UpdateParking(Protocol):
    """Where messages go that failed too often (storage.dead_letters.DeadLetters)."""

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
        """Store the message durably; raise when that is not possible."""
        ...


@dataclasses.dataclass(slots=True, frozen=True)
class ProcessorSettings:
    """How the processor paces itself (defaults suit one bot process)."""

    #: Failed attempts before a message is parked (WHATSAPP_MAX_UPDATE_ATTEMPTS).
    max_attempts: int = 5
    #: Documents above this are not downloaded (WHATSAPP_MAX_FILE_BYTES).
    max_file_bytes: int = 10 * 1024 * 1024
    #: Journal rows claimed at once.
    batch_size: int = 100
    #: A claim holds its rows this long; a crashed process's rows are taken again after it.
    lease: timedelta = timedelta(minutes=2)
    #: Back-off after the first failure of a message, doubling per attempt, up to the cap.
    retry_first: timedelta = timedelta(seconds=2)
    retry_cap: timedelta = timedelta(minutes=5)
    #: `run` looks at the journal at least this often (retries due, other processes' rows).
    idle_s: float = 2.0
    #: After a wake-up, wait this long so the messages arriving meanwhile share one claim
    #: (a claim and its bookkeeping cost about as much as an engine step).
    settle_s: float = 0.05
    #: Senders handled at once (their replies go out concurrently).
    concurrency: int = 32
    #: Engine steps running at once. On SQLite (one connection) more would only queue at
    #: the connection, ahead of the webhook's journal writes, and slow its answers.
    engine_concurrency: int = 1
    #: A sender's messages wait until their newest is this old, then go in sent order
    #: (WHATSAPP_ORDER_HOLD_S; storage.whatsapp_inbound.claim).
    hold: timedelta = timedelta(0)

    @classmethod
    def from_settings(cls, whatsapp: WhatsAppSettings) -> ProcessorSettings:
        """Attempts, file size and hold from the WHATSAPP_* settings, the rest by default.

        Adjust the rest with `dataclasses.replace`.
        """
        return cls(
            max_attempts=whatsapp.max_update_attempts,
            max_file_bytes=whatsapp.max_file_bytes,
            hold=timedelta(seconds=whatsapp.order_hold_s),
        )


class InboundProcessor:
    """The journal's consumer: recorded WhatsApp messages -> engine -> replies."""

    def __init__(
        self,
        *,
        database: AsyncEngine,
        engine: ConversationEngine,
        cipher: NikCipher,
        replies: ReplySink,
        media: MediaFetcher,
        parking: UpdateParking,
        catalogs: Catalogs,
        clock: Clock,
        settings: ProcessorSettings | None = None,
    ) -> None:
        self._database = database
        self._engine = engine
        self._cipher = cipher
        self._replies = replies
        self._media = media
        self._parking = parking
        self._catalogs = catalogs
        self._clock = clock
        self._settings = settings or ProcessorSettings()
        self._wakeup = asyncio.Event()
        self._chain_slots = asyncio.Semaphore(self._settings.concurrency)
        self._engine_slots = asyncio.Semaphore(self._settings.engine_concurrency)

    def wake(self) -> None:
        """Look at the journal now (the webhook recorded something)."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Process the journal until `stop` is set; a message in progress is finished first."""
        failures = 0
        while not stop.is_set():
            self._wakeup.clear()
            delay = self._settings.idle_s
            try:
                handled = await self.drain_once()
                failures = 0
                delay = await self._until_hold_ends(delay)
            except Exception as exc:  # the database is away: try again later
                failures += 1
                handled = 0
                delay = self._settings.idle_s * min(2**failures, 30)
                logger.warning("whatsapp journal not readable: %s", type(exc).__name__)
            if handled >= self._settings.batch_size:
                continue
            waiters = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._wakeup.wait()),
            }
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if self._wakeup.is_set() and not stop.is_set():
                await asyncio.sleep(self._settings.settle_s)

    async def drain_once(self) -> int:
        """Claim one batch and handle it; returns how many messages were claimed.

        Raises only when the claim itself fails (a database problem).
        """
        now = self._clock()
        async with self._database.begin() as connection:
            claimed = await claim(
                connection,
                now=now,
                lease=self._settings.lease,
                limit=self._settings.batch_size,
                hold=self._settings.hold,
            )
        if not claimed:
            return 0
        chains: dict[str, list[ClaimedMessage]] = {}
        for item in claimed:
            chains.setdefault(item.sender_id, []).append(item)
        handled: list[ClaimedMessage] = []
        results = await asyncio.gather(
            *(self._handle_chain(chain, handled) for chain in chains.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                # Outcome bookkeeping failed (database away); the leases hand the rows back later.
                logger.warning("whatsapp chain interrupted: %s", type(result).__name__)
        if handled:
            # One UPDATE for the batch: a row handled but not marked (a crash right here)
            # is replayed after its lease, and the engine ignores the replay.
            async with self._database.begin() as connection:
                marked = await mark_all_processed(connection, handled, now=self._clock())
            if marked < len(handled):
                logger.warning("whatsapp: %s claims lost", len(handled) - marked)
        return len(claimed)

    async def _until_hold_ends(self, idle: float) -> float:
        """Seconds until the next look: `idle`, or less when a held sender is free sooner."""
        if self._settings.hold <= timedelta(0):
            return idle
        now = self._clock()
        async with self._database.connect() as connection:
            ends = await hold_ends(connection, now=now, hold=self._settings.hold)
        if ends is None:
            return idle
        return min(idle, max((ends - now).total_seconds(), 0.0))

    async def _handle_chain(
        self, chain: Sequence[ClaimedMessage], handled: list[ClaimedMessage]
    ) -> None:
        """One sender's messages in order; after a failure the rest wait for its retry."""
        async with self._chain_slots:
            for index, item in enumerate(chain):
                try:
                    await self._handle(item)
                except Exception as exc:
                    if await self._fail(item, exc):
                        continue  # parked: the sender's next message goes on
                    async with self._database.begin() as connection:
                        await release(connection, chain[index + 1 :])
                    return
                handled.append(item)

    async def _handle(self, item: ClaimedMessage) -> None:
        payload = self._cipher.decrypt_payload(item.payload_ciphertext)
        event = to_event(item.message_id, payload, received_at=item.received_at)
        if event is None:
            return
        if item.late:
            event = dataclasses.replace(event, out_of_order=True)
        if event.kind is EventKind.DOCUMENT and event.file_ref is not None:
            event = await self._fetch_document(event)
        async with self._engine_slots:
            with (
                log_context.bound(update_id=event.update_id),
                metrics.engine_step(Channel.WHATSAPP),
            ):
                handled = await self._engine.handle_queued(event)
        self._replies.submit(event.sender_id, handled, item.message_id)

    async def _fetch_document(self, event: InboundEvent) -> InboundEvent:
        assert event.file_ref is not None
        limit = self._settings.max_file_bytes
        content = await self._media.fetch(event.file_ref, limit)
        if content is None or len(content) > limit:
            return dataclasses.replace(event, file_too_large=True)
        return dataclasses.replace(event, file_content=content)

    async def _fail(self, item: ClaimedMessage, exc: Exception) -> bool:
        """Count the failure; True when the message was parked (and the sender may go on)."""
        attempts = item.attempts + 1
        error = type(exc).__name__  # never the message: it may quote a NIK
        logger.warning(
            "whatsapp message %s failed (attempt %s): %s", item.message_id, attempts, error
        )
        if attempts >= self._settings.max_attempts or not is_transient_update(exc):
            try:
                await self._park(item, error, attempts)
                return True
            except Exception as park_exc:
                logger.error(
                    "whatsapp message %s not parked: %s", item.message_id, type(park_exc).__name__
                )
        delay = min(self._settings.retry_first * 2 ** (attempts - 1), self._settings.retry_cap)
        async with self._database.begin() as connection:
            await mark_failed(connection, item, error=error, retry_at=self._clock() + delay)
        return False

    def _readable_payload(self, item: ClaimedMessage) -> str:
        """The payload for operators; a placeholder when it cannot be decrypted (wrong key)."""
        try:
            return self._cipher.decrypt_payload(item.payload_ciphertext)
        except Exception:
            return '{"undecryptable": true}'

    async def _park(self, item: ClaimedMessage, error: str, attempts: int) -> None:
        now = self._clock()
        await self._parking.park(
            channel=Channel.WHATSAPP,
            update_id=item.message_id,
            sender_id=item.sender_id,
            payload=self._readable_payload(item),
            error_type=error,
            attempts=attempts,
            now=now,
        )
        async with self._database.begin() as connection:
            await mark_processed(connection, item, now=now, error=error)
        metrics.count_parked(Channel.WHATSAPP)
        logger.error(
            "whatsapp message %s parked after %s failed attempts", item.message_id, attempts
        )
        language = Language.INDONESIAN
        with contextlib.suppress(Exception):  # the database may be the reason it failed
            language = await self._engine.language_of(Channel.WHATSAPP, item.sender_id)
        text = self._catalogs.translator(language)("input.update_parked")
        try:
            await self._replies.send_now(
                item.sender_id, [Reply(text)], language, f"parked:{item.message_id}"
            )
        except Exception as exc:
            logger.warning(
                "whatsapp %s: parking notice not sent: %s", item.message_id, type(exc).__name__
            )
