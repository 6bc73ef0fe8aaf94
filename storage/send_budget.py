"""The send budget: how fast the bot may send on a channel, shared by everything that sends.

A platform limits the bot as a whole, not one process: Telegram about 30
messages/s per bot and one per second per chat, WhatsApp a rate per business
number and one message per 6 s per recipient (the pair rate limit). The
outbox dispatcher (scheduler/dispatcher.py) and the conversation replies
(bot/delivery.py) of every process draw on one budget per channel:

- the channel's pace is a reservation schedule (GCRA, the "virtual scheduling"
  form of a token bucket without burst): `tat`, the theoretical arrival time,
  is when the next send may start; a send of `count` messages starts at
  max(tat, now) and moves tat `count / rate` on. Sends are paced on their
  *start*, so a slow round trip costs no throughput;
- replies take their place unconditionally (`ahead_s=None`): someone is
  waiting for them. The dispatcher only takes a place starting within
  `ahead_s` of now, so it fills what the replies leave and never queues the
  replies behind a backlog of notices;
- per recipient, `free_at`: a notice to a person starts no earlier than one
  interval per message after the previous notice or reply to them (`replied`,
  after a reply's last message). A conversation's replies are answers to the person's
  own message and are not spaced themselves;
- a platform's "slow down" (Telegram 429, WhatsApp 130429) moves tat to the
  end of the pause: every process waits it out;
- a place is worth its time only if the send starts then: a process whose
  event loop (or whose whole self) stalled wakes with several places already
  past, and sending them together would put them in the seconds the other
  processes' places fill, over the platform's limit. `start_on_time` (both
  senders wait through it) gives up a place whose start passed by more than
  the sender's tolerance (a reply: `LATE_PLACE_S`; the dispatcher: its
  lookahead) and takes a new one at the schedule's end: a stall costs the
  stalled process its places, never the platform's limit.

Two implementations of one `SendBudget` port: `LocalSendBudget` keeps the
schedule in memory (SQLite: one process); `PostgresSendBudget` keeps it in
the rows of `send_budget` (one per channel) and `send_spacing` (one per
recipient recently sent to), each take one atomic statement on PostgreSQL's
clock, so any number of processes on any machines share it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time as time_module
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.vocabulary import Channel
from storage.db import side_pool

#: A reservation further ahead than this is "any": replies take their place whatever the wait.
_UNBOUNDED: Final = 1e9

#: A place whose start had passed by more than this when its sender woke is given up and a
#: new one taken (`start_on_time`): half of the default 4 % rate margin of a second, the
#: lateness the margin absorbs without a burst over the platform's limit.
LATE_PLACE_S: Final = 0.02


@dataclasses.dataclass(slots=True, frozen=True)
class Granted:
    """The send may start in `wait_s` seconds (0: now); its place is taken."""

    wait_s: float


@dataclasses.dataclass(slots=True, frozen=True)
class ChannelBusy:
    """The channel's next free place is `retry_in_s` beyond what the caller accepts
    (the others' sends, or a platform's pause); nothing was taken."""

    retry_in_s: float


@dataclasses.dataclass(slots=True, frozen=True)
class RecipientBusy:
    """The recipient may get the next notice in `free_in_s` seconds; nothing was taken."""

    free_in_s: float


Take = Granted | ChannelBusy | RecipientBusy


@dataclasses.dataclass(slots=True, frozen=True)
class ChannelRate:
    """A channel's budget: `per_second` sends, all processes together, and `recipient_interval_s`
    between two notices to one recipient."""

    per_second: float
    recipient_interval_s: float

    @property
    def cost_s(self) -> float:
        """How far one message moves the schedule on."""
        return 1.0 / self.per_second


class SendBudget(Protocol):
    """The places in a channel's send schedule (see the module docstring)."""

    async def take(
        self,
        channel: Channel,
        *,
        count: int = 1,
        recipient: str | None = None,
        ahead_s: float | None = None,
    ) -> Take:
        """Take the places of `count` messages, to `recipient` when given (spaced), starting
        within `ahead_s` of now (None: whenever the schedule has room)."""
        ...

    async def pause(self, channel: Channel, seconds: float) -> None:
        """No send on `channel` starts in the next `seconds` (a platform's retry_after)."""
        ...

    async def defer(self, channel: Channel, recipient: str, seconds: float) -> None:
        """No notice to `recipient` starts in the next `seconds` (WhatsApp's 131056)."""
        ...

    async def replied(self, channel: Channel, recipient: str, count: int = 1) -> None:
        """A reply of `count` messages just went to `recipient`: no notice to them starts
        within `count` recipient intervals, as if the reply had been notices (a notice due
        sooner would join the reply's messages in one burst over the platform's per-chat
        limit: Telegram allows 3 messages to a chat in 3 s, not a fourth)."""
        ...

    async def close(self) -> None:
        """Release what the budget holds (its database connections)."""
        ...


async def start_on_time(
    budget: SendBudget,
    channel: Channel,
    wait_s: float,
    *,
    count: int = 1,
    sleep: Callable[[float], Awaitable[None]],
    monotonic: Callable[[], float] = time_module.monotonic,
    late_after_s: float = LATE_PLACE_S,
    retakes: int = 1,
    ahead_s: float | None = None,
) -> int:
    """Wait `wait_s` for a granted place, then, if the wake-up came more than
    `late_after_s` after the place's start, take a new place (channel only: the
    recipient's spacing was counted from the first, earlier one) and wait for it, at
    most `retakes` times: a loop late on every wake (a machine under constant load)
    still sends, one place late, instead of taking places forever. Returns how many
    places were taken anew. A new place further than `ahead_s` (the dispatcher's
    lookahead: a platform's pause, which it answers by handing its rows back) is not
    taken: the loop ends and the caller decides as for a place met on time."""
    retaken = 0
    planned = monotonic() + wait_s
    if wait_s > 0:
        await sleep(wait_s)
    while retaken < retakes and monotonic() - planned > late_after_s:
        took = await budget.take(channel, count=count, ahead_s=ahead_s)
        if not isinstance(took, Granted):
            break
        retaken += 1
        planned = monotonic() + took.wait_s
        if took.wait_s > 0:
            await sleep(took.wait_s)
    return retaken


# --- the maths ------------------------------------------------------------------------


def schedule(
    tat: float, now: float, *, cost_s: float, ahead_s: float | None
) -> tuple[float, float] | None:
    """(start, new tat) of a send costing `cost_s` on a schedule at `tat`, or None when it
    would start later than `ahead_s` after `now`."""
    start = max(tat, now)
    if ahead_s is not None and start > now + ahead_s:
        return None
    return start, start + cost_s


@dataclasses.dataclass(slots=True)
class _Schedule:
    tat: float = 0.0
    free_at: dict[str, float] = dataclasses.field(default_factory=dict)
    takes: int = 0


class _RepliedAsNotices:
    """`SendBudget.replied` for both budgets: a deferral of the recipient by one interval
    per message of the reply."""

    _rates: dict[Channel, ChannelRate]

    async def defer(self, channel: Channel, recipient: str, seconds: float) -> None:
        raise NotImplementedError

    async def replied(self, channel: Channel, recipient: str, count: int = 1) -> None:
        rate = self._rates.get(channel)
        if rate is not None:
            await self.defer(channel, recipient, count * rate.recipient_interval_s)


class LocalSendBudget(_RepliedAsNotices):
    """The budget in this process's memory (SQLite: the bot runs as one process).

    `monotonic` is injectable so tests run the schedule on a frozen clock.
    """

    _PRUNE_EVERY = 1024

    def __init__(
        self,
        rates: Mapping[Channel, ChannelRate],
        *,
        monotonic: Callable[[], float] = time_module.monotonic,
    ) -> None:
        self._rates = dict(rates)
        self._monotonic = monotonic
        self._schedules = {channel: _Schedule() for channel in self._rates}

    async def close(self) -> None:
        return None

    async def take(
        self,
        channel: Channel,
        *,
        count: int = 1,
        recipient: str | None = None,
        ahead_s: float | None = None,
    ) -> Take:
        rate = self._rates.get(channel)
        if rate is None:  # a channel without limits (the console)
            return Granted(0.0)
        state = self._schedules[channel]
        now = self._monotonic()
        if recipient is not None:
            free_at = state.free_at.get(recipient, 0.0)
            if free_at > now:
                return RecipientBusy(free_at - now)
        planned = schedule(state.tat, now, cost_s=count * rate.cost_s, ahead_s=ahead_s)
        if planned is None:
            assert ahead_s is not None
            return ChannelBusy(state.tat - now - ahead_s)
        start, state.tat = planned
        if recipient is not None:
            state.free_at[recipient] = start + count * rate.recipient_interval_s
            state.takes += 1
            if state.takes % self._PRUNE_EVERY == 0:
                state.free_at = {key: at for key, at in state.free_at.items() if at > now}
        return Granted(start - now)

    async def pause(self, channel: Channel, seconds: float) -> None:
        state = self._schedules.get(channel)
        if state is not None:
            state.tat = max(state.tat, self._monotonic() + seconds)

    async def defer(self, channel: Channel, recipient: str, seconds: float) -> None:
        state = self._schedules.get(channel)
        if state is not None:
            free_at = self._monotonic() + seconds
            state.free_at[recipient] = max(state.free_at.get(recipient, 0.0), free_at)


# --- PostgreSQL ---------------------------------------------------------------------------

# One statement per take: the spacing pre-check, the channel's place (an upsert whose
# conflict branch locks the row and re-reads it, so concurrent takes serialise on it),
# then the recipient's place (likewise). The place is reckoned from the clock read once
# the row is locked: a take that waited for another's lock would otherwise plan from a
# stale "now" and start late, closer to the next one than the rate allows. A recipient
# taken by another process between the pre-check and its upsert leaves one unused place in
# the schedule: a short gap, no excess.
_TAKE = sa.text(
    """
    WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now),
    spacing AS (
        SELECT s.free_at FROM send_spacing AS s
        WHERE s.channel = :channel AND s.recipient = :recipient
    ),
    taken AS (
        INSERT INTO send_budget AS b (channel, tat)
        SELECT :channel, clock.now + :cost FROM clock
        WHERE NOT EXISTS (SELECT 1 FROM spacing WHERE spacing.free_at > clock.now)
        ON CONFLICT (channel) DO UPDATE
            SET tat = GREATEST(b.tat, extract(epoch FROM clock_timestamp())::float8) + :cost
            WHERE b.tat <= extract(epoch FROM clock_timestamp())::float8 + :ahead
        RETURNING b.tat - :cost AS start, extract(epoch FROM clock_timestamp())::float8 AS now
    ),
    spaced AS (
        INSERT INTO send_spacing AS s (channel, recipient, free_at)
        SELECT :channel, :recipient, taken.start + :hold FROM taken WHERE :spaced
        ON CONFLICT (channel, recipient) DO UPDATE
            SET free_at = excluded.free_at
            WHERE s.free_at <= excluded.free_at - :hold
        RETURNING s.free_at
    )
    SELECT coalesce((SELECT now FROM taken), clock.now) AS now,
           (SELECT start FROM taken) AS start,
           (SELECT count(*) FROM spaced) AS spaced,
           (SELECT b.tat FROM send_budget AS b WHERE b.channel = :channel) AS tat,
           (SELECT free_at FROM spacing) AS free_at
    FROM clock
    """
)

_PAUSE = sa.text(
    """
    INSERT INTO send_budget AS b (channel, tat)
    VALUES (:channel, extract(epoch FROM clock_timestamp())::float8 + :seconds)
    ON CONFLICT (channel) DO UPDATE SET tat = GREATEST(b.tat, excluded.tat)
    """
)

_DEFER = sa.text(
    """
    INSERT INTO send_spacing AS s (channel, recipient, free_at)
    VALUES (:channel, :recipient, extract(epoch FROM clock_timestamp())::float8 + :seconds)
    ON CONFLICT (channel, recipient) DO UPDATE SET free_at = GREATEST(s.free_at, excluded.free_at)
    """
)

_PRUNE = sa.text(
    "DELETE FROM send_spacing WHERE free_at < extract(epoch FROM clock_timestamp())::float8"
)


class PostgresSendBudget(_RepliedAsNotices):
    """The budget in PostgreSQL rows, shared by every process using the database.

    One round trip per take, pause or defer: each is one statement in autocommit,
    committed by PostgreSQL as the statement ends. In a transaction of its own
    (BEGIN, the statement, COMMIT from the client) the channel's row stayed
    locked from the take's update until the client's COMMIT arrived, a round
    trip later and later still when the process's event loop was busy, and
    every take of every process queued behind it. The tables are UNLOGGED
    (migration 0013): a commit waits for no WAL flush. The times are
    PostgreSQL's clock, so processes on several machines agree.

    The statements run on a pool of the budget's own (`POOL_SIZE`, kept open),
    opened in autocommit and checked
    out without the application pool's pre-ping: on asyncpg a pre-ping is three
    round trips (BEGIN, an empty statement, ROLLBACK) on every checkout, three
    times the take itself, and a reply of two messages checks out three times.
    A connection that died (PostgreSQL restarted) fails its statement, which
    the pool takes as a disconnect and replaces at the next checkout; the
    caller meets the failure as when the database is away (a reply is sent
    without its place, logged; the dispatcher's row is tried again).
    """

    _PRUNE_EVERY = 4096
    #: Connections kept open for the budget's statements, none opened beyond them: an
    #: overflow connection closes when it comes back, so with 2 kept a process behind its
    #: replies opened one per take (235 of 251 new connections in helper cost's profile),
    #: and with 4 + 6 a province of two processes still churned (BENCHMARKS section 18).
    POOL_SIZE: Final = 10
    POOL_OVERFLOW: Final = 0

    def __init__(self, database: AsyncEngine, rates: Mapping[Channel, ChannelRate]) -> None:
        if database.dialect.name != "postgresql":
            raise ValueError("PostgresSendBudget needs PostgreSQL; use LocalSendBudget")
        self._database = side_pool(
            database, size=self.POOL_SIZE, overflow=self.POOL_OVERFLOW, autocommit=True
        )
        self._rates = dict(rates)
        self._takes = 0

    async def close(self) -> None:
        await self._database.dispose()

    @contextlib.asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection of the budget's pool, whose every statement commits by itself (no
        BEGIN, no COMMIT round trips, no pre-ping)."""
        async with self._database.connect() as connection:
            yield connection

    async def take(
        self,
        channel: Channel,
        *,
        count: int = 1,
        recipient: str | None = None,
        ahead_s: float | None = None,
    ) -> Take:
        rate = self._rates.get(channel)
        if rate is None:
            return Granted(0.0)
        cost = count * rate.cost_s
        asked = time_module.monotonic()
        async with self._autocommit() as connection:
            row = (
                await connection.execute(
                    _TAKE,
                    {
                        "channel": channel.value,
                        "recipient": recipient or "",
                        "spaced": recipient is not None,
                        "cost": cost,
                        "hold": count * rate.recipient_interval_s,
                        "ahead": _UNBOUNDED if ahead_s is None else ahead_s,
                    },
                )
            ).one()
            self._takes += 1
            if self._takes % self._PRUNE_EVERY == 0:
                await connection.execute(_PRUNE)
        now, start, spaced, tat, free_at = row
        # The wait counts from when PostgreSQL read its clock, after the row's lock; the
        # commit and the way back took some of it. The wall clocks tell how much (the same
        # clock on one machine), never more than the whole take took.
        elapsed = time_module.monotonic() - asked
        since_read = min(max(0.0, time_module.time() - now), elapsed)
        if start is None:
            if recipient is not None and free_at is not None and free_at > now:
                return RecipientBusy(free_at - now)
            assert ahead_s is not None
            return ChannelBusy(max(0.0, tat - now - ahead_s))
        if recipient is not None and not spaced:
            # Another process took the recipient meanwhile (see _TAKE).
            return RecipientBusy(rate.recipient_interval_s)
        return Granted(max(0.0, start - now - since_read))

    async def pause(self, channel: Channel, seconds: float) -> None:
        async with self._autocommit() as connection:
            await connection.execute(_PAUSE, {"channel": channel.value, "seconds": seconds})

    async def defer(self, channel: Channel, recipient: str, seconds: float) -> None:
        async with self._autocommit() as connection:
            await connection.execute(
                _DEFER, {"channel": channel.value, "recipient": recipient, "seconds": seconds}
            )


def send_budget(
    database: AsyncEngine,
    rates: Mapping[Channel, ChannelRate],
    *,
    monotonic: Callable[[], float] = time_module.monotonic,
) -> SendBudget:
    """The budget for `database`: shared through PostgreSQL, or this process's own on SQLite."""
    if database.dialect.name == "postgresql":
        return PostgresSendBudget(database, rates)
    return LocalSendBudget(rates, monotonic=monotonic)
