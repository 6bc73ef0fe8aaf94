"""The outbox dispatcher: sends due outbox rows through the channels at their pace.

One `tick()` claims a batch of due rows (storage.outbox.claim_due), sends them
concurrently through each channel's `Sender` while keeping to the channel's
pace, and commits each row's outcome in its own transaction right after its
send, so a restart re-sends at most the rows that were in flight (see
storage/outbox.py for the one duplicate window that leaves). While a batch takes
its places the next one is already claimed (one batch ahead), so a slow claim
never leaves the schedule without rows; the rows take their places in the order
claimed, and a row whose lease is half gone by then goes back to pending
unsent instead (it could be claimed again by another dispatcher).

Pace, per channel, from the send budget (storage/send_budget.py) that the
conversation replies and, on PostgreSQL, every other process share
(Telegram: `telegram_rate_per_s`, default 30, the Bot API's limit per bot;
WhatsApp: `whatsapp_rate_per_s`, default 70, below the Cloud API's 80
messages/s per number, and `whatsapp_chat_interval_s`, default 6 s, Meta's
pair rate limit; each rate less `rate_margin`, default 4 %):

- sends are paced on their *start*, evenly, 1/rate apart: the round trip of
  a send costs no throughput (the sliding window before, freeing a place one
  second after a send completed, reached rate/(1 + round trip)). The margin
  absorbs the jitter between a send's planned start and its arrival;
- the same pace again on this process's *actual* starts (`_pass_start_gate`,
  slack half the margin): a late event loop wakes several sends at once, and
  they go one interval apart instead of in a burst the platform refuses;
- the dispatcher takes a place only when it starts within a few sends of now
  (`lookahead_s`), so it fills what the replies leave and a reply never waits
  behind a batch of notices; a process's own sends queue on a lock per
  channel, one take at a time;
- per recipient at most one message per interval (`telegram_chat_interval_s`,
  1 s; `whatsapp_chat_interval_s`, 6 s), kept in the budget too, from the
  planned start and again from the send's completion. A batch keeps one row
  per recipient; further rows of the same recipient go back to pending
  without counting an attempt, due one interval apart from when the first is
  expected to go out (its place in the batch at the channel's rate).
  (Channels without limits, the console, send a recipient's rows in order
  within the tick);
- a `RetryAfter` (Telegram 429, WhatsApp 130429) pauses the whole channel for
  `retry_after`, in the budget (every process waits it out); the row goes
  back to pending for that long, also without counting an attempt. Rows of
  the batch not yet sent are handed back the same way, and the next ticks
  claim nothing for that channel until the pause is over;
- a `Deferred` (WhatsApp 131056, the pair rate limit) concerns one recipient:
  the row goes back to pending for its `seconds` without counting an attempt,
  the recipient's spacing starts again, and the channel keeps sending.

Errors: `Transient` (network, 5xx, timeouts) retries with exponential back-off
and jitter (`backoff_first_s` doubling up to `backoff_cap_s`, each delay drawn
from its upper half) until `max_attempts` sends were tried, then the row
fails; `Permanent` (blocked, chat not found) fails at once. The reason is kept
in `last_error` (see `sertakan outbox failed`).

Quiet hours (domain.quiet_hours): while the local time in the configured zone
is inside the window, a tick claims nothing, so rows keep waiting in the
database.

Who calls what: APScheduler triggers `tick()` every `tick_interval_s`
(scheduler/runner.py, `max_instances=1`, `coalesce=True`; a tick never overlaps
another tick of the same dispatcher). `run(stop)` is the same work as a loop,
ticking again at once after a full batch, for a process that only dispatches
and for the benchmark. `stop()` ends a running tick early: rows not yet sent are
handed back, sends in flight are recorded.

Time goes through injectable functions: `clock` (aware UTC datetimes, stored
timestamps and quiet hours), `monotonic` and `sleep` (pacing), `random`
(jitter), so tests run with a frozen clock and never wait for real.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random as random_module
import time as time_module
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, time, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.quiet_hours import QuietHours
from domain.vocabulary import Channel
from scheduler.sending import (
    Deferred,
    OutgoingNotice,
    Permanent,
    PlaceMissed,
    RetryAfter,
    Sender,
    SendResult,
    Sent,
    Transient,
    write_by,
)
from storage.outbox import (
    ClaimedNotice,
    claim_due,
    hand_back,
    mark_failed,
    mark_retry,
    mark_sent,
)
from storage.send_budget import (
    ChannelBusy,
    ChannelRate,
    Granted,
    LocalSendBudget,
    RecipientBusy,
    SendBudget,
    start_on_time,
)

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

#: Attempts to commit one outcome before giving up on it (the lease then brings
#: the row back, which may duplicate that one message).
_RECORD_ATTEMPTS = 3


class DispatcherSettings(Protocol):
    """What the dispatcher reads from its configuration (bot.settings.DispatcherSettings)."""

    @property
    def telegram_rate_per_s(self) -> float:
        """Telegram sends per second, all chats together."""
        ...

    @property
    def telegram_chat_interval_s(self) -> float:
        """Minimum time between two messages to one Telegram chat."""
        ...

    @property
    def whatsapp_rate_per_s(self) -> float:
        """WhatsApp sends per second from our number, all recipients together."""
        ...

    @property
    def whatsapp_chat_interval_s(self) -> float:
        """Minimum time between two messages to one WhatsApp user."""
        ...

    @property
    def batch_size(self) -> int:
        """Rows claimed per tick."""
        ...

    @property
    def lease_s(self) -> float:
        """How long a claim holds a row before another dispatcher may take it."""
        ...

    @property
    def max_attempts(self) -> int:
        """Sends tried before a row with transient errors fails."""
        ...

    @property
    def backoff_first_s(self) -> float:
        """Delay after the first transient failure; doubles per attempt."""
        ...

    @property
    def backoff_cap_s(self) -> float:
        """Longest back-off delay."""
        ...

    @property
    def quiet_start(self) -> time:
        """Local time the quiet hours start."""
        ...

    @property
    def quiet_end(self) -> time:
        """Local time the quiet hours end (equal to the start: no quiet hours)."""
        ...

    @property
    def tick_interval_s(self) -> float:
        """How often the scheduler triggers a tick."""
        ...

    @property
    def rate_margin(self) -> float:
        """Share of each rate kept unused against the jitter of arrivals (0.04: 4 %)."""
        ...

    @property
    def idle_s(self) -> float:
        """How long `run()` waits after a tick that found less than a full batch."""
        ...


@runtime_checkable
class CountsMessages(Protocol):
    """A sender that may deliver one notice as several platform messages."""

    def message_count(self, notice: OutgoingNotice) -> int:
        """How many messages `send(notice)` makes, spacing them itself (each takes a place)."""
        ...


#: A channel busy for longer than this (a platform's pause) hands its rows back instead
#: of holding them; shorter waits are the others' sends and are waited out.
_WAIT_AT_MOST_S = 1.0


def budget_rates(settings: DispatcherSettings) -> dict[Channel, ChannelRate]:
    """The channels' send budgets from the settings: the configured rate less the safety
    margin (sends are paced on their start; the margin absorbs the jitter of their arrival)."""
    keep = 1.0 - settings.rate_margin
    return {
        Channel.TELEGRAM: ChannelRate(
            settings.telegram_rate_per_s * keep, settings.telegram_chat_interval_s
        ),
        Channel.WHATSAPP: ChannelRate(
            settings.whatsapp_rate_per_s * keep, settings.whatsapp_chat_interval_s
        ),
    }


def lookahead_s(rate: ChannelRate) -> float:
    """How far ahead the dispatcher takes places: a few sends, so a late timer costs no
    throughput, while a reply never waits behind more than these."""
    return max(3 * rate.cost_s, 0.05)


class Dispatcher:
    """Claims due outbox rows and delivers them through `senders` (one per channel).

    Rows of channels without a sender stay in the outbox untouched.
    """

    def __init__(
        self,
        database: AsyncEngine,
        senders: Mapping[Channel, Sender],
        clock: Callable[[], datetime],
        settings: DispatcherSettings,
        timezone: ZoneInfo,
        *,
        monotonic: Callable[[], float] = time_module.monotonic,
        sleep: Sleep = asyncio.sleep,
        random: Callable[[], float] = random_module.random,
        budget: SendBudget | None = None,
    ) -> None:
        """`budget`: the send budget shared with the replies (and, on PostgreSQL, with the
        other processes); by default one of this dispatcher's own on `monotonic`."""
        for channel, sender in senders.items():
            if sender.channel is not channel:
                raise ValueError(f"sender for {channel} delivers on {sender.channel}")
        self._database = database
        self._senders = dict(senders)
        self._clock = clock
        self._settings = settings
        self._zone = timezone
        self._quiet = QuietHours(settings.quiet_start, settings.quiet_end)
        self._monotonic = monotonic
        self._sleep = sleep
        self._random = random
        self._rates = {
            channel: rate
            for channel, rate in budget_rates(settings).items()
            if channel in self._senders
        }
        self._budget = budget or LocalSendBudget(self._rates, monotonic=monotonic)
        #: Claimed rows still to take their place (all batches of the running tick): per
        #: channel, and per recipient (a later batch hands that recipient's rows back);
        #: `_dequeued` is set whenever one took it (or went back to pending).
        self._queued_rows: collections.Counter[Channel] = collections.Counter()
        self._queued_recipients: collections.Counter[tuple[Channel, str]] = collections.Counter()
        self._dequeued = asyncio.Event()
        #: This process's own sends, by their actual start (see `_pass_start_gate`): when the
        #: next may start; how far ahead of that a send may go, half of what the margin
        #: leaves between the schedule and the platform's limit (4 %: 20 ms); and the gate's
        #: spacing against the schedule's, half the margin closer (a late stream catches up).
        self._start_gate = {channel: 0.0 for channel in self._rates}
        self._gate_slack_s = settings.rate_margin / 2
        self._gate_spacing = (1 - settings.rate_margin) / (1 - settings.rate_margin / 2)
        #: Sends the start gate held back (woken by a late loop together with later ones).
        self.starts_held = 0
        #: Places given up because this process woke after their start (`start_on_time`).
        self.places_retaken = 0
        #: Sends whose connection came after their place: not written, placed anew.
        self.places_missed = 0
        #: This process's view of a platform's pause (its own 429s, the budget's long waits).
        self._paused_until: dict[Channel, float] = {}
        #: One take at a time per channel: this process's sends queue here, not in the budget.
        self._taking = {channel: asyncio.Lock() for channel in self._rates}
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()

    @property
    def tick_interval_s(self) -> float:
        return self._settings.tick_interval_s

    def paused_for(self, channel: Channel) -> float:
        """Seconds the channel stays paused by a platform's retry_after (0 when not)."""
        return max(0.0, self._paused_until.get(channel, 0.0) - self._monotonic())

    # --- the work -----------------------------------------------------------------

    async def tick(self) -> int:
        """Claim what is due now and deliver it; returns how many rows were claimed.

        After a full batch the next is claimed at once, while this one takes its
        places, and then one more each time a batch's worth of rows has taken
        theirs: a batch of rows always waits, claimed, behind those being placed,
        so a claim has a whole batch's sending time (2 s at 70/s) to come back and
        the schedule never runs dry between two batches. (Claimed half a second
        ahead, as before, a claim that took longer, behind the outcomes being
        committed or in a stall of the process, left the schedule's places
        untaken: a place nobody takes in time is lost.) The tick returns once every
        claimed row is recorded (or handed back).

        Returns 0 at once during quiet hours, while another tick of this
        dispatcher runs, or after `stop()`.
        """
        if self._lock.locked() or self._stopping.is_set():
            return 0
        async with self._lock:
            claimed = 0
            sending: list[asyncio.Task[None]] = []
            try:
                while not self._stopping.is_set():
                    # One batch ahead: claimed once at most a batch's rows wait for places.
                    while self._queued_rows.total() > self._settings.batch_size:
                        self._dequeued.clear()
                        await self._dequeued.wait()
                    if self._stopping.is_set():
                        break
                    batch = await self._claim_batch()
                    if batch is None:
                        break
                    claims, tasks = batch
                    sending.extend(tasks)
                    claimed += len(claims)
                    if len(claims) < self._settings.batch_size:
                        break
            finally:
                await asyncio.gather(*sending, return_exceptions=True)
            return claimed

    async def _claim_batch(self) -> tuple[list[ClaimedNotice], list[asyncio.Task[None]]] | None:
        """Claim due rows and start delivering them; None when nothing is due (or quiet)."""
        now = self._clock()
        if self._quiet.is_quiet(now, self._zone):
            return None
        channels = [channel for channel in self._senders if self.paused_for(channel) <= 0]
        if not channels:
            return None
        async with self._database.begin() as connection:
            claims = await claim_due(
                connection,
                now=now,
                limit=self._settings.batch_size,
                lease=timedelta(seconds=self._settings.lease_s),
                channels=channels,
            )
        # Every tick (2 s): DEBUG, so an idle day leaves no lines at INFO.
        log.debug("outbox tick: %d due", len(claims))
        if not claims:
            return None
        chains, later = self._by_recipient(claims)
        if later:
            await self._space_out(later, now)
        for chain in chains:
            for claim in chain:
                self._queued_rows[claim.channel] += 1
                self._queued_recipients[claim.channel, claim.recipient] += 1
        return claims, [asyncio.create_task(self._deliver_in_order(chain)) for chain in chains]

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set: again at once after a full batch, else after `idle_s`.

        A failing tick (the database is unreachable) is logged and retried after
        `idle_s`. On `stop`, rows not yet sent are handed back and sends in
        flight are recorded before this returns.
        """
        watcher = asyncio.create_task(self._stop_when(stop))
        try:
            while not self._stopping.is_set():
                try:
                    handled = await self.tick()
                except Exception:
                    log.exception("outbox tick failed")
                    handled = 0
                if handled < self._settings.batch_size:
                    await self._idle(self._settings.idle_s)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def stop(self) -> None:
        """Stop taking rows; waits until a running tick has recorded or handed back its rows.

        A stopped dispatcher stays stopped (build a new one to start again).
        """
        self._stopping.set()
        async with self._lock:
            pass

    async def _stop_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def _idle(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    def _by_recipient(
        self, claims: list[ClaimedNotice]
    ) -> tuple[list[list[ClaimedNotice]], list[tuple[ClaimedNotice, float]]]:
        """The claims to send now, one chain per recipient, and those to hand back with a delay.

        On a channel with a per-recipient interval (Telegram, WhatsApp) a chain
        holds one claim and the recipient's others are handed back, so a tick
        never sits out the interval: the rank-th other (1, 2, ...) is due
        `rank` intervals after the chain's own send is expected to start (its
        place among the channel's chains at the channel's rate, behind the rows
        of earlier batches still waiting for theirs). A row due before its
        recipient's spacing ran out would hold up a later tick; with the 6 s
        WhatsApp interval and a batch taking 2 s that showed. A recipient with a
        row of an earlier batch still waiting for its place gets no chain: their
        rows here are handed back likewise, counted from when the rows waiting
        will have gone (so a recipient's rows keep their order across batches).
        Without an interval (the console), a recipient's claims are sent one
        after another in the tick.
        """
        chains: dict[tuple[Channel, str], list[ClaimedNotice]] = {}
        starts: dict[tuple[Channel, str], float] = {}
        ranks: collections.Counter[tuple[Channel, str]] = collections.Counter()
        per_channel: collections.Counter[Channel] = collections.Counter()
        later: list[tuple[ClaimedNotice, float]] = []
        for claim in claims:
            key = (claim.channel, claim.recipient)
            rate = self._rates.get(claim.channel)
            spaced = rate is not None and rate.recipient_interval_s > 0
            queued = self._queued_rows[claim.channel]
            if spaced and key not in starts and self._queued_recipients[key] > 0:
                assert rate is not None
                starts[key] = queued * rate.cost_s  # at the latest, with the rows waiting
            if key not in starts:
                starts[key] = (queued + per_channel[claim.channel]) * rate.cost_s if rate else 0.0
                per_channel[claim.channel] += 1
                chains[key] = []
            if spaced and (key not in chains or chains[key]):
                assert rate is not None
                ranks[key] += 1
                later.append((claim, starts[key] + rate.recipient_interval_s * ranks[key]))
            else:
                chains[key].append(claim)
        return list(chains.values()), later

    async def _deliver_in_order(self, chain: list[ClaimedNotice]) -> None:
        for claim in chain:
            placed = self._placed_once(claim)
            try:
                await self._deliver(claim, placed)
            except Exception as exc:  # logged by type: the row comes back after its lease
                log.error("outbox %s: delivery failed: %s", claim.id, type(exc).__name__)
            finally:
                placed()

    def _placed_once(self, claim: ClaimedNotice) -> Callable[[], None]:
        """A callback taking the claim off the rows waiting for their places (it took its
        place, waits for its recipient, or went back), once, however often it is called."""
        counted = False

        def placed() -> None:
            nonlocal counted
            if counted:
                return
            counted = True
            key = (claim.channel, claim.recipient)
            self._queued_rows[claim.channel] -= 1
            self._queued_recipients[key] -= 1
            if self._queued_recipients[key] <= 0:
                del self._queued_recipients[key]
            self._dequeued.set()

        return placed

    async def _space_out(self, later: list[tuple[ClaimedNotice, float]], now: datetime) -> None:
        """Hand rows back that a recipient would get too soon after the batch's first."""
        async with self._database.begin() as connection:
            await hand_back(
                connection, [(claim, now + timedelta(seconds=delay)) for claim, delay in later]
            )

    async def _deliver(self, claim: ClaimedNotice, placed: Callable[[], None]) -> None:
        """Send one claimed row at the channel's pace and record the outcome; `placed()`
        once its place is taken (or it is handed back)."""
        sender = self._senders[claim.channel]
        notice = OutgoingNotice(
            outbox_id=claim.id,
            channel=claim.channel,
            recipient=claim.recipient,
            kind=claim.kind,
            body=claim.body,
            template=claim.template,
            params=claim.params,
            template_only=claim.template_only,
            recipient_language=claim.recipient_language,
            last_inbound_at=claim.last_inbound_at,
        )
        messages = sender.message_count(notice) if isinstance(sender, CountsMessages) else 1
        if not await self._take_place(claim, messages, placed) or self._stopping.is_set():
            placed()
            await self._hand_back(claim)
            return
        placed()
        try:
            result = await self._send_in_place(claim, sender, notice, messages)
        except Exception as exc:  # a sender must not raise; if it does, retry the row
            log.exception("outbox %s: sender raised", claim.id)
            result = Transient(f"sender raised {type(exc).__name__}")
        await self._after_send(claim, result)
        await self._record(claim, result)

    async def _send_in_place(
        self, claim: ClaimedNotice, sender: Sender, notice: OutgoingNotice, messages: int
    ) -> SendResult:
        """Send `notice`, its place come: its first request is written within the
        channel's lookahead of now or not at all (`write_by`; a connection opened on a
        busy loop came later: `PlaceMissed`, nothing written). Then the row takes one new
        place in the channel (its recipient's spacing counts from the first) and goes
        then on the connection now in the pool, whatever the time."""
        rate = self._rates.get(claim.channel)
        if rate is None:
            return await sender.send(notice)
        try:
            with write_by(time_module.monotonic() + lookahead_s(rate)):
                return await sender.send(notice)
        except PlaceMissed as missed:
            self.places_missed += 1
            log.debug("outbox %s: %s; a new place", claim.id, missed)
        took = await self._budget.take(claim.channel, count=messages)
        if isinstance(took, Granted) and took.wait_s > 0:
            await self._sleep(took.wait_s)
        await self._pass_start_gate(claim.channel, messages * rate.cost_s)
        return await sender.send(notice)

    def _lease_running_out(self, claim: ClaimedNotice) -> bool:
        """Less than half the claim's lease is left: the row goes back to pending unsent
        rather than take a place.

        A batch waits, claimed, behind the one being placed (`tick`), so a row may
        wait two batches' sending time for its place (10 s at 30/s with batches of
        150), and a row held back for its recipient (a 131056) longer; a row sent
        after its lease ran out might be sent again by another dispatcher that
        claimed it meanwhile. Half the lease is left for the wait within the
        lookahead, the send, its answer and the outcome's commit."""
        left = claim.claimed_until - self._clock()
        return left < timedelta(seconds=self._settings.lease_s / 2)

    async def _after_send(self, claim: ClaimedNotice, result: SendResult) -> None:
        """Tell the budget what the platform said; the recipient's interval runs from now."""
        rate = self._rates.get(claim.channel)
        if rate is None:
            return
        if isinstance(result, RetryAfter):
            await self._pause(claim.channel, result.seconds)
        # The interval also counts from the send's completion: its place was taken for its
        # planned start, and a request on its way (a new connection) may arrive later.
        hold = result.seconds if isinstance(result, Deferred) else rate.recipient_interval_s
        try:
            await self._budget.defer(claim.channel, claim.recipient, hold)
        except Exception as exc:  # the place taken still spaces the recipient from the start
            log.warning("%s spacing not recorded: %s", claim.channel, type(exc).__name__)

    async def _take_place(
        self, claim: ClaimedNotice, messages: int, placed: Callable[[], None]
    ) -> bool:
        """Wait for the row's place in the channel's budget and the recipient's spacing;
        False when the channel is paused beyond `_WAIT_AT_MOST_S`, when the claim's lease
        is running out (`_lease_running_out`) or when stopping. A row waiting for its
        recipient counts as `placed()`: the next batch need not wait for it."""
        rate = self._rates.get(claim.channel)
        if rate is None:
            return True
        ahead = lookahead_s(rate)
        while not self._stopping.is_set():
            if self.paused_for(claim.channel) > 0:
                return False
            async with self._taking[claim.channel]:
                while True:
                    if self._stopping.is_set() or self._lease_running_out(claim):
                        return False
                    took = await self._budget.take(
                        claim.channel, count=messages, recipient=claim.recipient, ahead_s=ahead
                    )
                    if not (isinstance(took, ChannelBusy) and took.retry_in_s <= _WAIT_AT_MOST_S):
                        break
                    # The others' sends: waited out holding the lock, so this process's
                    # next rows queue behind this one, in the order claimed. (Let go and
                    # taken again, the lock put this row behind every row waiting for it:
                    # half the rows, each that met a full lookahead, went behind the rest
                    # of the batch and the next one's.)
                    await self._sleep(took.retry_in_s)
            match took:
                case Granted(wait_s=wait):
                    self.places_retaken += await start_on_time(
                        self._budget,
                        claim.channel,
                        wait,
                        count=messages,
                        sleep=self._sleep,
                        monotonic=self._monotonic,
                        # Later than a place it would take now: a stall, not jitter.
                        late_after_s=ahead,
                        ahead_s=ahead,
                    )
                    await self._pass_start_gate(claim.channel, messages * rate.cost_s)
                    # A 429 to a send before this one pauses the rest of the batch too.
                    return self.paused_for(claim.channel) <= 0
                case RecipientBusy(free_in_s=free_in):
                    placed()
                    await self._sleep(free_in)
                case ChannelBusy(retry_in_s=retry_in):
                    self._note_pause(claim.channel, retry_in)
                    return False
        return False

    async def _pass_start_gate(self, channel: Channel, cost_s: float) -> None:
        """Wait until this process's sends on `channel`, by their actual start, keep
        about the schedule's pace: `cost_s` apart less `_gate_slack_s` in all.

        The budget places sends 1/rate apart, but a busy event loop (or a process
        the system did not run for a while) wakes several at once, late, and a
        platform counting arrivals sees them in one burst over its limit. The gate
        is the schedule again, on the starts (GCRA with a tolerance): a send that
        follows a late one waits, so a late loop shifts the stream instead of
        bunching it. Its spacing is half the margin shorter than the schedule's,
        so the shift is made up within seconds (at 4 %, 2 % faster) instead of
        adding up, late wake after late wake, into lost throughput; at most
        rate x (1 - margin / 2) x (1 s + slack) + 1 sends start in any second
        (30 at 30/s), the platform's limit.
        """
        while True:
            now = self._monotonic()
            earliest = self._start_gate[channel] - self._gate_slack_s
            if now >= earliest:
                spacing = cost_s * self._gate_spacing
                self._start_gate[channel] = max(self._start_gate[channel], now) + spacing
                return
            self.starts_held += 1
            await self._sleep(earliest - now)

    async def _pause(self, channel: Channel, seconds: float) -> None:
        """Pause the channel's sends, for every process sharing the budget; logged once per
        pause, not per refused row."""
        if self._note_pause(channel, seconds):
            log.warning("%s flood control: sends paused for %.1fs", channel, seconds)
        try:
            await self._budget.pause(channel, seconds)
        except Exception as exc:  # this process pauses anyway; the others learn from their 429
            log.warning("%s pause not shared: %s", channel, type(exc).__name__)

    def _note_pause(self, channel: Channel, seconds: float) -> bool:
        """Remember a pause; False when one already known lasts longer."""
        until = self._monotonic() + seconds
        if until <= self._paused_until.get(channel, 0.0):
            return False
        self._paused_until[channel] = until
        return True

    async def _hand_back(self, claim: ClaimedNotice) -> None:
        """Return an unsent row to pending (stopping, or its channel paused meanwhile)."""
        pause = self.paused_for(claim.channel)
        not_before = self._clock() + timedelta(seconds=pause)
        await self._commit(
            claim,
            "hand back",
            lambda connection: mark_retry(
                connection, claim, not_before=not_before, error=None, count_attempt=False
            ),
        )

    async def _record(self, claim: ClaimedNotice, result: SendResult) -> None:
        now = self._clock()
        match result:
            case Sent(provider_message_id=provider_message_id):
                await self._commit(
                    claim,
                    "sent",
                    lambda connection: mark_sent(
                        connection, claim, now=now, provider_message_id=provider_message_id
                    ),
                )
            case RetryAfter(seconds=seconds, error=error) | Deferred(seconds=seconds, error=error):
                await self._commit(
                    claim,
                    "retry after",
                    lambda connection: mark_retry(
                        connection,
                        claim,
                        not_before=now + timedelta(seconds=seconds),
                        error=error,
                        count_attempt=False,
                    ),
                )
            case Transient(error=error):
                attempts = claim.attempts + 1
                if attempts >= self._settings.max_attempts:
                    log.warning("outbox %s failed after %d attempts", claim.id, attempts)
                    await self._commit(
                        claim,
                        "failed",
                        lambda connection: mark_failed(connection, claim, error=error),
                    )
                    return
                delay = self.backoff(attempts)
                log.info("outbox %s: transient error, retry in %.0fs", claim.id, delay)
                await self._commit(
                    claim,
                    "retry",
                    lambda connection: mark_retry(
                        connection, claim, not_before=now + timedelta(seconds=delay), error=error
                    ),
                )
            case Permanent(error=error):
                log.warning("outbox %s failed permanently", claim.id)
                await self._commit(
                    claim, "failed", lambda connection: mark_failed(connection, claim, error=error)
                )

    def backoff(self, attempts: int) -> float:
        """The delay after `attempts` failed sends: capped doubling, drawn from its upper half."""
        settings = self._settings
        ceiling = min(settings.backoff_cap_s, settings.backoff_first_s * 2.0 ** (attempts - 1))
        return ceiling / 2 + self._random() * ceiling / 2

    async def _commit(
        self,
        claim: ClaimedNotice,
        what: str,
        write: Callable[[AsyncConnection], Awaitable[bool]],
    ) -> None:
        """Run `write` in its own transaction, retried a few times when the database fails."""
        for attempt in range(1, _RECORD_ATTEMPTS + 1):
            try:
                async with self._database.begin() as connection:
                    held = await write(connection)
            except Exception:
                if attempt == _RECORD_ATTEMPTS:
                    log.exception("outbox %s: recording %r failed; the lease brings it back",
                                  claim.id, what)  # fmt: skip
                    return
                await self._sleep(0.1 * attempt)
                continue
            if not held:
                log.warning("outbox %s: claim lost before recording %r", claim.id, what)
            return
