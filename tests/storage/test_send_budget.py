"""The send budget's schedule: the maths on a frozen clock, and the PostgreSQL rows shared
by several engines (skipped on SQLite, where the budget lives in memory)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from domain.vocabulary import Channel
from storage.db import create_engine
from storage.send_budget import (
    ChannelBusy,
    ChannelRate,
    Granted,
    LocalSendBudget,
    PostgresSendBudget,
    RecipientBusy,
    schedule,
    send_budget,
    start_on_time,
)

RATES = {Channel.TELEGRAM: ChannelRate(per_second=4.0, recipient_interval_s=1.0)}


class FrozenMonotonic:
    """Monotonic time that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FrozenMonotonic:
    return FrozenMonotonic()


@pytest.fixture
def budget(clock: FrozenMonotonic) -> LocalSendBudget:
    return LocalSendBudget(RATES, monotonic=clock)


def test_a_send_starts_at_the_later_of_now_and_the_schedule() -> None:
    assert schedule(0.0, 10.0, cost_s=0.25, ahead_s=None) == (10.0, 10.25)
    assert schedule(12.0, 10.0, cost_s=0.25, ahead_s=None) == (12.0, 12.25)
    assert schedule(12.0, 10.0, cost_s=0.25, ahead_s=2.0) == (12.0, 12.25)
    assert schedule(12.0, 10.0, cost_s=0.25, ahead_s=1.9) is None


async def test_sends_start_one_over_the_rate_apart_never_in_a_burst(
    budget: LocalSendBudget,
) -> None:
    waits = [await budget.take(Channel.TELEGRAM) for _ in range(5)]
    assert waits == [Granted(0.0), Granted(0.25), Granted(0.5), Granted(0.75), Granted(1.0)]


async def test_an_idle_channel_does_not_save_up_places(
    budget: LocalSendBudget, clock: FrozenMonotonic
) -> None:
    await budget.take(Channel.TELEGRAM)
    clock.now += 60
    assert [await budget.take(Channel.TELEGRAM) for _ in range(2)] == [Granted(0.0), Granted(0.25)]


async def test_a_notice_of_several_messages_takes_a_place_for_each(
    budget: LocalSendBudget,
) -> None:
    assert await budget.take(Channel.TELEGRAM, count=3) == Granted(0.0)
    assert await budget.take(Channel.TELEGRAM) == Granted(0.75)


async def test_a_take_with_a_lookahead_is_refused_beyond_it_and_takes_nothing(
    budget: LocalSendBudget,
) -> None:
    for _ in range(3):
        await budget.take(Channel.TELEGRAM)  # the schedule is now 0.75 s ahead
    assert await budget.take(Channel.TELEGRAM, ahead_s=0.5) == ChannelBusy(0.25)
    assert await budget.take(Channel.TELEGRAM, ahead_s=0.75) == Granted(0.75)


async def test_replies_go_before_notices_waiting_for_room(budget: LocalSendBudget) -> None:
    """A reply takes the next place whatever the wait; the dispatcher's lookahead then
    finds the schedule further on and waits its turn behind it."""
    assert await budget.take(Channel.TELEGRAM, ahead_s=0.3) == Granted(0.0)
    assert await budget.take(Channel.TELEGRAM, ahead_s=0.3) == Granted(0.25)
    assert await budget.take(Channel.TELEGRAM) == Granted(0.5)  # a reply
    assert await budget.take(Channel.TELEGRAM, ahead_s=0.3) == ChannelBusy(0.45)


async def test_a_recipient_gets_one_notice_per_interval_per_message(
    budget: LocalSendBudget, clock: FrozenMonotonic
) -> None:
    assert await budget.take(Channel.TELEGRAM, count=2, recipient="42") == Granted(0.0)
    assert await budget.take(Channel.TELEGRAM, recipient="42") == RecipientBusy(2.0)
    assert await budget.take(Channel.TELEGRAM, recipient="43") == Granted(0.5)
    clock.now += 2.0
    assert await budget.take(Channel.TELEGRAM, recipient="42") == Granted(0.0)


async def test_a_recipient_refused_takes_no_place_of_the_channel(budget: LocalSendBudget) -> None:
    await budget.take(Channel.TELEGRAM, recipient="42")
    await budget.take(Channel.TELEGRAM, recipient="42")
    assert await budget.take(Channel.TELEGRAM) == Granted(0.25)


async def test_a_deferred_recipient_waits_the_platforms_time(
    budget: LocalSendBudget, clock: FrozenMonotonic
) -> None:
    await budget.defer(Channel.TELEGRAM, "42", 30.0)
    assert await budget.take(Channel.TELEGRAM, recipient="42") == RecipientBusy(30.0)
    await budget.defer(Channel.TELEGRAM, "42", 5.0)  # never shortens a longer hold
    assert await budget.take(Channel.TELEGRAM, recipient="42") == RecipientBusy(30.0)


async def test_a_pause_holds_every_send_until_it_is_over(
    budget: LocalSendBudget, clock: FrozenMonotonic
) -> None:
    await budget.pause(Channel.TELEGRAM, 5.0)
    assert await budget.take(Channel.TELEGRAM, ahead_s=0.5) == ChannelBusy(4.5)
    assert await budget.take(Channel.TELEGRAM) == Granted(5.0)
    clock.now += 5.25
    assert await budget.take(Channel.TELEGRAM, ahead_s=0.5) == Granted(0.0)


async def test_a_channel_without_a_rate_is_not_paced(budget: LocalSendBudget) -> None:
    assert [await budget.take(Channel.CONSOLE, recipient="1") for _ in range(3)] == [
        Granted(0.0)
    ] * 3


class StallingSleep:
    """A sleep on the frozen clock that oversleeps by `stalls` (one per call, then 0): a
    process the system did not run for a while."""

    def __init__(self, clock: FrozenMonotonic, stalls: list[float]) -> None:
        self.clock = clock
        self.stalls = stalls
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.now += seconds + (self.stalls.pop(0) if self.stalls else 0.0)


async def test_a_place_whose_start_passed_in_a_stall_is_taken_anew_at_the_schedules_end(
    budget: LocalSendBudget, clock: FrozenMonotonic
) -> None:
    first = await budget.take(Channel.TELEGRAM)  # starts now
    second = await budget.take(Channel.TELEGRAM)  # 0.25 s later
    assert isinstance(second, Granted)
    for _ in range(4):  # other senders fill the schedule up to now + 1.5 s
        await budget.take(Channel.TELEGRAM)
    sleep = StallingSleep(clock, stalls=[0.3])  # the loop wakes 300 ms after the place
    retaken = await start_on_time(
        budget, Channel.TELEGRAM, second.wait_s, sleep=sleep, monotonic=clock
    )
    assert first == Granted(0.0)
    assert retaken == 1
    # The new place is the schedule's next one (now + 1.5 s), not "now, with the others".
    assert sleep.slept == [0.25, pytest.approx(1.5 - 0.55)]
    assert clock.now == pytest.approx(1_000.0 + 1.5)


async def test_a_place_met_on_time_or_within_the_tolerance_is_kept(
    budget: LocalSendBudget, clock: FrozenMonotonic
) -> None:
    await budget.take(Channel.TELEGRAM)
    took = await budget.take(Channel.TELEGRAM)
    assert isinstance(took, Granted)
    sleep = StallingSleep(clock, stalls=[0.015])  # 15 ms late: inside the 20 ms tolerance
    retaken = await start_on_time(
        budget, Channel.TELEGRAM, took.wait_s, sleep=sleep, monotonic=clock
    )
    assert retaken == 0
    assert sleep.slept == [0.25]


async def test_a_loop_late_on_every_wake_takes_one_new_place_then_sends(
    budget: LocalSendBudget, clock: FrozenMonotonic
) -> None:
    await budget.take(Channel.TELEGRAM)
    took = await budget.take(Channel.TELEGRAM)
    assert isinstance(took, Granted)
    sleep = StallingSleep(clock, stalls=[0.1, 0.1, 0.1])  # every wake 100 ms late
    retaken = await start_on_time(
        budget, Channel.TELEGRAM, took.wait_s, sleep=sleep, monotonic=clock
    )
    assert retaken == 1  # not a place after place for ever: one new place, then it sends
    assert len(sleep.slept) == 2


async def test_sqlite_gets_the_local_budget(db_engine: AsyncEngine) -> None:
    budget = send_budget(db_engine, RATES)
    expected = PostgresSendBudget if db_engine.dialect.name == "postgresql" else LocalSendBudget
    assert isinstance(budget, expected)


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
async def engines(db_engine: AsyncEngine, database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Three engines with their own pools: three processes' view of one database."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("the shared budget needs TEST_DATABASE_URL on PostgreSQL")
    made = [create_engine(database_url) for _ in range(3)]
    yield made
    for engine in made:
        await engine.dispose()


@pytest.fixture
async def budgets(engines: list[AsyncEngine]) -> AsyncIterator[list[PostgresSendBudget]]:
    """One shared budget per engine (process), closed after the test."""
    made = [PostgresSendBudget(engine, RATES) for engine in engines]
    yield made
    for budget in made:
        await budget.close()


async def test_processes_share_one_schedule(budgets: list[PostgresSendBudget]) -> None:
    """Concurrent takes from three engines get distinct starts, one cost apart."""

    async def take_and_stamp(budget: PostgresSendBudget) -> float:
        took = await budget.take(Channel.TELEGRAM)
        assert isinstance(took, Granted)
        return asyncio.get_running_loop().time() + took.wait_s

    starts = sorted(await asyncio.gather(*(take_and_stamp(b) for b in budgets * 4)))
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # 0.25 s apart by PostgreSQL's clock; the local stamps add the round trips' spread.
    assert all(gap > 0.2 for gap in gaps), gaps
    assert starts[-1] - starts[0] == pytest.approx(11 * 0.25, abs=0.25)


async def test_a_recipient_and_a_pause_hold_for_every_process(
    budgets: list[PostgresSendBudget],
) -> None:
    first, second, _ = budgets
    assert await first.take(Channel.TELEGRAM, recipient="42", ahead_s=1.0) == Granted(0.0)
    busy = await second.take(Channel.TELEGRAM, recipient="42", ahead_s=1.0)
    assert isinstance(busy, RecipientBusy) and 0.9 < busy.free_in_s <= 1.0

    await second.pause(Channel.TELEGRAM, 30.0)
    refused = await first.take(Channel.TELEGRAM, recipient="43", ahead_s=1.0)
    assert isinstance(refused, ChannelBusy) and 28.5 < refused.retry_in_s <= 29.0

    await first.defer(Channel.TELEGRAM, "44", 60.0)
    deferred = await second.take(Channel.TELEGRAM, recipient="44")
    assert isinstance(deferred, RecipientBusy) and 59 < deferred.free_in_s <= 60


async def test_the_budgets_statements_commit_by_themselves_off_the_applications_pool(
    engines: list[AsyncEngine], budgets: list[PostgresSendBudget]
) -> None:
    """A take, a defer and a pause commit by themselves (autocommit), on connections of the
    budget's own: they neither wait for the application's pool (its only connection is
    in a transaction here) nor join that transaction (it rolls back; they stay)."""
    engine = create_async_engine(engines[0].url, pool_size=1, max_overflow=0, pool_timeout=2)
    budget = PostgresSendBudget(engine, RATES)
    try:
        with pytest.raises(RuntimeError, match="undo"):
            async with engine.begin() as connection:  # the application's only connection
                await connection.exec_driver_sql(
                    "INSERT INTO send_spacing (channel, recipient, free_at) "
                    "VALUES ('telegram', 'undone', 0)"
                )
                took = await budget.take(Channel.TELEGRAM, recipient="45")
                assert isinstance(took, Granted)
                await budget.defer(Channel.TELEGRAM, "45", 5.0)
                await budget.pause(Channel.TELEGRAM, 0.5)
                raise RuntimeError("undo")
        async with engine.connect() as connection:
            left = await connection.exec_driver_sql(
                "SELECT count(*) FROM send_spacing WHERE recipient = 'undone'"
            )
            assert left.scalar() == 0
    finally:
        await budget.close()
        await engine.dispose()
    # Committed, each statement by itself: another process sees all three.
    other = budgets[1]
    refused = await other.take(Channel.TELEGRAM, recipient="46", ahead_s=0.1)
    assert isinstance(refused, ChannelBusy)
    spaced = await other.take(Channel.TELEGRAM, recipient="45")
    assert isinstance(spaced, RecipientBusy) and spaced.free_in_s > 4.0


async def test_the_budget_sends_no_pre_ping_and_survives_a_dropped_connection(
    engines: list[AsyncEngine], budgets: list[PostgresSendBudget]
) -> None:
    """A take is one statement on the wire (the application's pool pre-pings: BEGIN, an
    empty statement and ROLLBACK before it); when PostgreSQL drops the budget's
    connection, that one take fails and the next succeeds on a new connection."""
    budget = budgets[0]
    pool_engine = budget._database.sync_engine
    async with budget._database.connect() as connection:  # the budget's one open connection
        pid = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
    sent: list[str] = []
    sqlalchemy.event.listen(pool_engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    assert isinstance(await budget.take(Channel.TELEGRAM), Granted)
    assert len(sent) == 1 and sent[0].lstrip().startswith("WITH clock")
    assert pool_engine.pool._pre_ping is False

    async with engines[1].connect() as connection:
        await connection.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(sqlalchemy.exc.DBAPIError):
        await budget.take(Channel.TELEGRAM)
    assert isinstance(await budget.take(Channel.TELEGRAM), Granted)


def test_the_postgres_budget_refuses_sqlite() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        PostgresSendBudget(create_engine("sqlite+aiosqlite://"), RATES)
