"""Dues reminders, escalation and lapse (PRODUCT 3, 5), planned into the outbox once a day.

`ReminderPlanner.plan` looks at every dues-bearing sponsorship (ACTIVE or
CARD_HANDED_OVER) as of today's local date and plans, for whoever pays:

- `before5` / `before1`: 5 days and 1 day before the due date of the first
  unpaid month (`domain.dues.due_date`: the 15th, or the next working day);
  `before5` also on the days up to 2 before when it was not planned on the
  5th (a day the scheduler was down, a sponsorship that became active only
  then): its key keeps it to one;
- `overdue`: once one month is in arrears (from the day after its due date);
- `escalation`: once two months are in arrears ("protection ends after the
  third"), to the ASN;
- lapse: at three months in arrears the sponsorship becomes LAPSED and the ASN
  and every PIC of its OPD are told once.

Payroll-deduction sponsorships (the plan in force for the unpaid month) are
paid by the OPD's treasurer, so their before/overdue reminders go to the OPD's
PICs as one line per OPD and month (`reminder.payroll.pic` with the count;
`reminder.payroll.pic_overdue`, kind `reminder.payroll_overdue`, once the due
date has passed), not to each ASN; escalation and lapse still reach the ASN.

Months count as paid here once the ASN recorded them (the PIC not having
decided yet): someone who paid is neither reminded nor lapsed while the PIC
checks the receipt; a rejection makes the months unpaid again and the next
run reminds (overdue, escalation) or lapses as due. The dues themselves
(paid-until, "my workers", the coverage report) count confirmed payments only.

Every notice has a dedupe key per (sponsorship or OPD+PIC, period, kind), so a
re-run, a restart or a second process never plans one twice. A payment
recorded before a reminder went out cancels it: `dues_queries.cancel_reminders`, called in
the payment's transaction. Reminders are due at 08:00 local time; the
dispatcher holds them during quiet hours anyway.

Cost (`bench/bench_reminders.py`, 144,000 sponsorships, 900,000 payments,
104,000 notices; figures in docs/BENCHMARKS.md section 4): three set-based
reads (the sponsorships' terms, the confirmed months aggregated per
sponsorship in SQL, the PICs); `dues_status` once per distinct input (first
month, plan, funding, paid run), since thousands of sponsorships share one;
one index range scan per (kind, period) for the keys already planned; names
and accounts read only for new notices; the text of a group of reminders
filled in once, each notice only getting its name; rows written in key order
(SQLite: one executemany with ON CONFLICT DO NOTHING; PostgreSQL: a binary
COPY fed while the notices are rendered). On PostgreSQL the names and accounts
are read on a second connection while the lapse's UPDATE runs. A re-run the
same day renders and writes nothing.
Everything that decides or writes happens in one transaction (only the names
are read beside it): a payment recorded meanwhile waits for it (SQLite) or is
seen by the lapse update's own check (`mark_lapsed`).

That is the one-transaction planner (`chunk_size=None`). The default planner
works in pages (`_plan_chunked`) and writes a page's reminders from SQL
(`_write_named`; the lapse notices alike, `_lapse_named`): each (kind, status,
language) is rendered once with a mark for the name, and one INSERT ... SELECT
per page joins the page's (key, sponsorship, text) rows to the names and
accounts, puts the name in (`replace()`), and skips keys that exist (ON
CONFLICT DO NOTHING), so
neither the existing keys nor the names are read and no row is built in
Python (at 1.44 million sponsorships those per-row steps were most of the
client's time and a large part of the server's; docs/ARCHITECTURE.md "One
planner across processes"). The rows are those the per-row path writes (a
test compares them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import operator
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.dues import DuesStatus, due_date, dues_status, plan_in_force
from domain.months import add_months
from domain.payment_channels import PaymentChannel
from domain.tariff import TariffTable
from domain.vocabulary import Channel, Language, PaymentPlan
from domain.workdays import WorkCalendar
from handlers.i18n import Catalogs, Translator
from handlers.where_to_pay import where_to_pay
from storage import dues_queries
from storage.db import read_only
from storage.dues_queries import (
    DuesTerms,
    NoticeGroup,
    PaidMonths,
    Payer,
    PicRecipient,
    PlannedNotice,
    TermsRow,
    lapse_asn_key,
    lapse_pic_key,
    params_json,
    payroll_key,
    reminder_key,
    reminder_prefix,
    terms_of,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Sponsorships per page of a chunked run (`ReminderPlanner(chunk_size=...)`): each page
#: is one short transaction, so a run's memory and a chat's wait for the write lock are
#: bounded by the page, not by the province.
DEFAULT_CHUNK_SIZE = 5000

#: Local time from which the day's reminders may go out.
SEND_FROM = time(8, 0)

#: Days before the due date by reminder kind: `before5` 5 down to 2 days before (planned
#: once, on the first of those days the planner runs; its text names the date, not the
#: days left), `before1` the day before.
_BEFORE = {5: "before5", 4: "before5", 3: "before5", 2: "before5", 1: "before1"}


@dataclasses.dataclass(slots=True)
class PlanResult:
    """What one run wrote: new outbox rows per kind, and sponsorships that lapsed."""

    before5: int = 0
    before1: int = 0
    overdue: int = 0
    escalation: int = 0
    #: Lines to PICs about payroll-deduction dues (any of before5/before1/overdue).
    payroll: int = 0
    #: Sponsorships made LAPSED by this run.
    lapsed: int = 0
    #: Lapse notices written (ASN and PICs).
    lapse_notices: int = 0

    @property
    def notices(self) -> int:
        return (
            self.before5
            + self.before1
            + self.overdue
            + self.escalation
            + self.payroll
            + self.lapse_notices
        )


#: Stands for the name while a group's text is filled in once; never part of a month,
#: date, amount or count, the only other values.
_NAME = "\x00"
_NAME_JSON = json.dumps(_NAME)


@dataclasses.dataclass(slots=True, frozen=True)
class _Filled:
    """A notice's body and params JSON with every value but the name filled in.

    `with_name(name)` gives exactly `t(kind, name=name, **rest)` and
    `params_json({"name": name, **rest})` (json.dumps escapes a string with
    `encode_basestring_ascii`), for a join instead of a format and a dump per
    notice.
    """

    kind: str
    #: The body, split where the name goes.
    body: list[str]
    #: The params JSON before and after the name's JSON string.
    params: tuple[str, str]

    @classmethod
    def of(cls, t: Translator, kind: str, rest: dict[str, Any]) -> _Filled:
        params = {"name": _NAME, **rest}
        if any(_NAME in str(value) for value in rest.values()):  # pragma: no cover - never
            raise ValueError(f"a value of {kind} holds the name's stand-in: {rest}")
        head, _, tail = params_json(params).partition(_NAME_JSON)
        return cls(kind, t(kind, **params).split(_NAME), (head, tail))

    def with_name(self, name: str) -> tuple[str, str]:
        return name.join(self.body), self.params[0] + encode_basestring_ascii(name) + self.params[1]


#: The dedupe key of a `_Reminder` or a `PlannedNotice` (their first field).
_key_of = operator.itemgetter(0)


class _Reminder(NamedTuple):
    key: str
    kind: str
    terms: TermsRow
    status: DuesStatus


#: Called inside each page's transaction once its rows are written, with the pages done
#: so far and the run's result so far (`scheduler.planning` renews its lease there, so a
#: page commits only while the run still holds it).
ChunkHook = Callable[[AsyncConnection, int, "PlanResult"], Awaitable[None]]


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one planning run.

    A run holds some 10^6 small objects (rows, keys, notices); allocating them
    triggers full collections that walk them all again and again: 0.6 s of a
    3.2 s run at 144,000 sponsorships (measured). The run's own objects are
    freed by reference counting, and must be before the collector is re-enabled:
    its first collection walks every object allocated meanwhile that is still
    alive (0.06-0.1 s when `plan` still held them, measured). The few cycles
    made meanwhile (anywhere in the process) are collected once the collector
    is re-enabled, which happens afterwards (if it was enabled), also when the
    run fails.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclasses.dataclass(slots=True, frozen=True)
class ReminderSpec:
    """Everything a `ReminderPlanner` is made of but its database and clock (picklable:
    `scheduler.planning` builds the planner again in a child process from it)."""

    catalogs: Catalogs
    timezone: ZoneInfo
    calendar: WorkCalendar
    tariff: TariffTable
    worker_channel: Channel | None
    payment_channels: tuple[PaymentChannel, ...]
    chunk_size: int | None
    pages_in_flight: int = 1

    def planner(self, database: AsyncEngine, clock: Clock) -> ReminderPlanner:
        return ReminderPlanner(
            database,
            self.catalogs,
            clock,
            timezone=self.timezone,
            calendar=self.calendar,
            tariff=self.tariff,
            worker_channel=self.worker_channel,
            payment_channels=self.payment_channels,
            chunk_size=self.chunk_size,
            pages_in_flight=self.pages_in_flight,
        )


class ReminderPlanner:
    """Plans the day's dues reminders; APScheduler calls `plan` (idempotent per day)."""

    def __init__(
        self,
        database: AsyncEngine,
        catalogs: Catalogs,
        clock: Clock,
        *,
        timezone: ZoneInfo,
        calendar: WorkCalendar,
        tariff: TariffTable,
        worker_channel: Channel | None = None,
        payment_channels: Sequence[PaymentChannel] = (),
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        pages_in_flight: int = 1,
    ) -> None:
        """`worker_channel` (WhatsApp, when configured): workers are told too (at risk, lapsed).

        `payment_channels`: where BPJS dues are paid, added to the payer's reminders
        (PROGRAM_PAYMENT_CHANNELS_FILE; none: "ask your PIC").
        `chunk_size`: sponsorships per page, each page its own transaction
        (`_plan_chunked`); None plans everything in one transaction (`_plan_whole`,
        the planner before pages: its memory grows with the province).
        `pages_in_flight`: PostgreSQL, pages planned at once, each on a connection of
        its own (`_plan_in_flight`); SQLite (one writer) always plans one at a time.
        """
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        if pages_in_flight < 1:
            raise ValueError(f"pages_in_flight must be at least 1, not {pages_in_flight}")
        self._pages_in_flight = pages_in_flight
        self._chunk_size = chunk_size
        self._worker_channel = worker_channel
        self._payment_channels = tuple(payment_channels)
        self._database = database
        self._catalogs = catalogs
        self._clock = clock
        self._timezone = timezone
        self._calendar = calendar
        self._tariff = tariff
        self._translators: dict[Language, Translator] = {}

    def _t(self, language: Language) -> Translator:
        translator = self._translators.get(language)
        if translator is None:
            translator = self._translators[language] = self._catalogs.translator(language)
        return translator

    @property
    def chunk_size(self) -> int | None:
        """Sponsorships per page (None: one transaction over all of them)."""
        return self._chunk_size

    @property
    def spec(self) -> ReminderSpec:
        """This planner without its database and clock (see `ReminderSpec`)."""
        return ReminderSpec(
            self._catalogs,
            self._timezone,
            self._calendar,
            self._tariff,
            self._worker_channel,
            self._payment_channels,
            self._chunk_size,
            self._pages_in_flight,
        )

    async def plan(
        self,
        *,
        on_chunk: ChunkHook | None = None,
        between_pages: Callable[[int], Awaitable[None]] | None = None,
    ) -> PlanResult:
        """Plan today's reminders, escalations and lapses, page by page (`chunk_size`).

        `on_chunk` runs in each page's transaction after its writes (and in the
        last one's, after the payroll lines); an exception there rolls the page back
        and ends the run. Pages are committed one by one: a run that stops halfway
        leaves whole pages, and the next run skips what they wrote (dedupe keys).
        `between_pages(pages done)` is awaited after each committed page, with no
        transaction open (default: one turn of the event loop for others).
        """
        now = self._clock()
        today = now.astimezone(self._timezone).date()
        not_before = datetime.combine(today, SEND_FROM, self._timezone).astimezone(UTC)
        with _cyclic_gc_paused():
            # The run's objects live in `_plan`'s frame: all freed when it returns,
            # before the collector is back (see `_cyclic_gc_paused`).
            if self._chunk_size is None:
                result = await self._plan_whole(now, today, not_before, on_chunk)
            elif self._pages_in_flight > 1 and self._database.dialect.name == "postgresql":
                result = await self._plan_in_flight(
                    now, today, not_before, self._chunk_size, on_chunk, between_pages
                )
            else:
                result = await self._plan_chunked(
                    now, today, not_before, self._chunk_size, on_chunk, between_pages
                )
        # A run that wrote nothing is routine: DEBUG (SERTAKAN_LOG_LEVEL=DEBUG shows it).
        quiet = result == PlanResult()
        log.log(logging.DEBUG if quiet else logging.INFO, "reminders for %s: %s", today, result)
        return result

    async def _plan_chunked(
        self,
        now: datetime,
        today: date,
        not_before: datetime,
        chunk_size: int,
        on_chunk: ChunkHook | None,
        between_pages: Callable[[int], Awaitable[None]] | None,
    ) -> PlanResult:
        """Pages of `chunk_size` sponsorships in id order (keyset), each read, then written.

        Each page reads only its own terms and payments (an id range of the
        payment index), in a transaction that only reads (`storage.db.read_only`:
        on SQLite no write lock, so a chat's step never waits for a page's reads
        or its Python work); then writes its reminders and lapses, and their
        notices from SQL with the names (`_write_named`, `_lapse_named`: no keys
        or names are read), in a short transaction of its own, which first
        drops the reminders of sponsorships with a payment
        recorded or decided since the read (`dues_queries.paid_since`; a lapse
        checks the same in its UPDATE). The payroll lines, counted over all
        pages, go in the last page's write (a short last page, or an empty one
        when the last is full). A page with nothing to write and no `on_chunk`
        opens no write transaction; reminders whose keys exist are left out in
        the read (`_not_planned`), so a re-run's pages write nothing. Between
        pages no transaction is open.
        """
        result = PlanResult()
        pics: dict[int, list[PicRecipient]] | None = None
        payroll: dict[tuple[int, str, date], int] = {}
        decisions: dict[tuple[object, ...], tuple[str | None, DuesStatus | None, str]] = {}
        texts: dict[tuple[str, DuesStatus, Language | None], NoticeGroup] = {}
        after = 0
        pages = 0
        while True:
            read_at = self._clock()
            async with read_only(self._database) as reader:
                if pics is None:
                    pics = await dues_queries.pics_by_opd(reader)
                terms = await dues_queries.dues_terms(reader, after=after, limit=chunk_size)
                last = len(terms) < chunk_size
                reminders: list[_Reminder] = []
                lapsing: list[DuesTerms] = []
                id_range = (terms[0][0], terms[-1][0]) if terms else None
                if terms:
                    reminders, lapsing = await self._read_page(
                        reader, terms, today, decisions, payroll
                    )
            pages += 1
            if reminders or lapsing or (last and payroll) or on_chunk is not None:
                async with self._database.begin() as connection:
                    if id_range is not None and reminders:
                        paid_meanwhile = await dues_queries.paid_since(
                            connection, id_range, read_at
                        )
                        if paid_meanwhile:
                            reminders = [r for r in reminders if r.terms[0] not in paid_meanwhile]
                    changed = await dues_queries.mark_lapsed(
                        connection,
                        [row.sponsorship_id for row in lapsing],
                        now=now,
                        read_at=now,
                    )
                    await self._write_named(connection, reminders, texts, result, now, not_before)
                    await self._lapse_named(connection, changed, result, now, not_before)
                    if last:
                        await self._write_payroll(
                            connection, payroll, pics, result, now, not_before
                        )
                    if on_chunk is not None:
                        await on_chunk(connection, pages, result)
            if last:
                return result
            assert id_range is not None
            after = id_range[1]
            if between_pages is not None:
                await between_pages(pages)
            else:
                # Whoever shares this loop (in-process runs) gets a turn between pages.
                await asyncio.sleep(0)

    async def _plan_in_flight(
        self,
        now: datetime,
        today: date,
        not_before: datetime,
        chunk_size: int,
        on_chunk: ChunkHook | None,
        between_pages: Callable[[int], Awaitable[None]] | None,
    ) -> PlanResult:
        """PostgreSQL: `_plan_chunked`'s pages, `pages_in_flight` of them at once.

        A page is planned by the server (the reads, the lapse and the notices'
        INSERT ... SELECT are most of a run), on one backend per connection: one
        page at a time leaves the second core idle. Each of `pages_in_flight`
        tasks takes the next page (its terms read under a lock, so the pages
        are disjoint id ranges in keyset order) and reads, decides and writes it
        on connections of its own, as `_plan_chunked` does. In a page's write
        transaction the reminders go first and the lapse last: the lapse's
        count triggers lock shared count rows (per OPD and status) until the
        commit, which the other page's lapse waits for; the rows are locked in
        one order, so the pages wait, never deadlock. The payroll lines,
        counted over all pages, are written once every page is done, in a
        transaction of their own (with `on_chunk`). The rows written are those
        of `_plan_chunked` (a test compares them); a failure cancels the other
        pages (their transactions roll back) and is raised.
        """
        result = PlanResult()
        payroll: dict[tuple[int, str, date], int] = {}
        decisions: dict[tuple[object, ...], tuple[str | None, DuesStatus | None, str]] = {}
        texts: dict[tuple[str, DuesStatus, Language | None], NoticeGroup] = {}
        async with read_only(self._database) as reader:
            pics = await dues_queries.pics_by_opd(reader)
        # The next page's start, whether the last page was read, and the pages done.
        cursor = {"after": 0, "ended": False, "done": 0}
        next_page = asyncio.Lock()

        async def plan_pages() -> None:
            while not cursor["ended"]:
                read_at = self._clock()
                reminders: list[_Reminder] = []
                lapsing: list[DuesTerms] = []
                async with read_only(self._database) as reader:
                    async with next_page:
                        if cursor["ended"]:
                            return
                        terms = await dues_queries.dues_terms(
                            reader, after=int(cursor["after"]), limit=chunk_size
                        )
                        if len(terms) < chunk_size:
                            cursor["ended"] = True
                        if terms:
                            cursor["after"] = terms[-1][0]
                    id_range = (terms[0][0], terms[-1][0]) if terms else None
                    if id_range is not None:
                        reminders, lapsing = await self._read_page(
                            reader, terms, today, decisions, payroll
                        )
                if reminders or lapsing or on_chunk is not None:
                    async with self._database.begin() as connection:
                        if id_range is not None and reminders:
                            paid_meanwhile = await dues_queries.paid_since(
                                connection, id_range, read_at
                            )
                            if paid_meanwhile:
                                reminders = [
                                    r for r in reminders if r.terms[0] not in paid_meanwhile
                                ]
                        await self._write_named(
                            connection, reminders, texts, result, now, not_before
                        )
                        changed = await dues_queries.mark_lapsed(
                            connection,
                            [row.sponsorship_id for row in lapsing],
                            now=now,
                            read_at=now,
                        )
                        await self._lapse_named(connection, changed, result, now, not_before)
                        cursor["done"] += 1
                        if on_chunk is not None:
                            await on_chunk(connection, int(cursor["done"]), result)
                else:
                    cursor["done"] += 1
                if between_pages is not None:
                    await between_pages(int(cursor["done"]))
                else:
                    await asyncio.sleep(0)

        tasks = [asyncio.ensure_future(plan_pages()) for _ in range(self._pages_in_flight)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if payroll or on_chunk is not None:
            async with self._database.begin() as connection:
                await self._write_payroll(connection, payroll, pics, result, now, not_before)
                if on_chunk is not None:
                    await on_chunk(connection, int(cursor["done"]), result)
        return result

    async def _plan_whole(
        self, now: datetime, today: date, not_before: datetime, on_chunk: ChunkHook | None
    ) -> PlanResult:
        """Every sponsorship in one transaction (`chunk_size=None`)."""
        result = PlanResult()
        async with self._database.begin() as connection:
            terms = await dues_queries.dues_terms(connection)
            # A payment the ASN recorded counts until the PIC decides (rejected: the
            # next run reminds again), so nobody is reminded of, or lapsed for,
            # months already paid and only waiting for the PIC.
            paid = await dues_queries.confirmed_months(connection, including_recorded=True)
            pics = await dues_queries.pics_by_opd(connection)
            reminders, prefixes, payroll, lapsing = self._compute(terms, paid, today)
            existing = await dues_queries.existing_keys(connection, prefixes)
            missing = [reminder for reminder in reminders if reminder.key not in existing]
            # In key order, so the unique index takes the new keys one after another
            # (PostgreSQL: some 10% less server time for the copy than in id order).
            missing.sort(key=_key_of)
            lapsing_ids = [row.sponsorship_id for row in lapsing]
            # One read of the names and accounts for both the new reminders and the lapses.
            wanted = [reminder.terms[0] for reminder in missing] + lapsing_ids
            lapse = dues_queries.mark_lapsed(connection, lapsing_ids, now=now, read_at=now)
            if connection.dialect.name == "sqlite" or not wanted:
                # Names first: a wave of lapses is read with the dues-bearing rows
                # (`dues_queries.payers`), which the lapse takes out.
                payers = await dues_queries.payers(connection, wanted)
                changed = await lapse
            else:
                # On a second connection while the lapse's UPDATE runs in this
                # transaction: names and accounts are not what the UPDATE changes,
                # and the server does both at once (a process per connection).
                reading = asyncio.ensure_future(self._payers(wanted))
                try:
                    changed = await lapse
                except BaseException:
                    reading.cancel()
                    raise
                payers = await reading
            await self._write_reminders(connection, missing, payers, result, now, not_before)
            await self._write_payroll(connection, payroll, pics, result, now, not_before)
            await self._lapse(
                connection, lapsing, set(changed), payers, pics, result, now, not_before
            )
            if on_chunk is not None:
                await on_chunk(connection, 1, result)
        return result

    async def _read_page(
        self,
        reader: AsyncConnection,
        terms: list[TermsRow],
        today: date,
        decisions: dict[tuple[object, ...], tuple[str | None, DuesStatus | None, str]],
        payroll: dict[tuple[int, str, date], int],
    ) -> tuple[list[_Reminder], list[DuesTerms]]:
        """One page's reminders not planned yet and its lapses, in the page's read; its
        payroll lines added to `payroll` (both the page loop and pages in flight)."""
        paid = await dues_queries.confirmed_months(
            reader, including_recorded=True, id_range=(terms[0][0], terms[-1][0])
        )
        reminders, _, page_payroll, lapsing = self._compute(terms, paid, today, decisions)
        for group, count in page_payroll.items():
            payroll[group] = payroll.get(group, 0) + count
        return await self._not_planned(reader, reminders), lapsing

    @staticmethod
    async def _not_planned(reader: AsyncConnection, reminders: list[_Reminder]) -> list[_Reminder]:
        """A page's `reminders` whose keys are not in the outbox yet (read in the page's read
        transaction, one index probe a key: `dues_queries.keys_present`).

        A re-run the same day finds them all, so its pages open no write
        transaction: no `paid_since` read, no INSERT whose every row its NOT EXISTS
        probe drops, and no wait for, or hold of, SQLite's write lock. A key
        deleted after the read is not planned again by this run: what deletes a
        pending reminder (a payment's `cancel_reminders`, the sponsorship's end)
        also means it is not due. The write still skips keys written since the
        read (ON CONFLICT DO NOTHING).
        """
        if not reminders:
            return reminders
        present = await dues_queries.keys_present(reader, [r.key for r in reminders])
        if not present:
            return reminders
        return [reminder for reminder in reminders if reminder.key not in present]

    async def _payers(self, sponsorship_ids: list[int]) -> dict[int, Payer]:
        """`dues_queries.payers` on a connection of its own (read only, outside the run's
        transaction: 8,640 lapses take the server 0.4 s, the names as long again)."""
        async with self._database.connect() as reader:
            return await dues_queries.payers(reader, sponsorship_ids)

    def _compute(
        self,
        terms: list[TermsRow],
        paid: PaidMonths,
        today: date,
        decisions: dict[tuple[object, ...], tuple[str | None, DuesStatus | None, str]]
        | None = None,
    ) -> tuple[list[_Reminder], set[str], dict[tuple[int, str, date], int], list[DuesTerms]]:
        """Today's reminders and their keys' prefixes, payroll counts per (OPD, kind, month),
        and lapsing sponsorships.

        What a sponsorship needs today depends only on its terms and its
        confirmed months; when those are one run (nearly always) many
        sponsorships share them, so `dues_status` and the decision are made
        once per distinct input and the loop itself only looks them up.
        `decisions`: that cache, kept across a chunked run's pages.
        """
        if decisions is None:
            decisions = {}
        reminders: list[_Reminder] = []
        prefixes: set[str] = set()
        payroll: dict[tuple[int, str, date], int] = {}
        lapsing: list[DuesTerms] = []
        runs = paid.runs
        irregular = paid.exact
        for values in terms:
            sponsorship_id = values[0]
            run = runs.get(sponsorship_id)
            if run is None and sponsorship_id in irregular:
                action, status, prefix = self._decide(
                    terms_of(values), paid.months(sponsorship_id), today
                )
            else:
                # Plan, first month, funding, next plan and its month; and the paid run.
                cache_key = (values[2:], run)
                decision = decisions.get(cache_key)
                if decision is None:
                    decision = decisions[cache_key] = self._decide(
                        terms_of(values), paid.months(sponsorship_id), today
                    )
                action, status, prefix = decision
            if action is None or status is None:
                continue
            if action == "lapse":
                lapsing.append(terms_of(values))
            elif action == "payroll":
                group = (values[1], prefix, status.next_month)
                payroll[group] = payroll.get(group, 0) + 1
            else:
                prefixes.add(prefix)
                reminders.append(_Reminder(prefix + str(sponsorship_id), action, values, status))
        return reminders, prefixes, payroll, lapsing

    def _decide(
        self, row: DuesTerms, months: frozenset[date], today: date
    ) -> tuple[str | None, DuesStatus | None, str]:
        """(action, status, key prefix or payroll kind) for one sponsorship today.

        The action is None (nothing today), "lapse", "payroll" (the kind in the
        third place) or a reminder kind (its key prefix in the third place).
        """
        first_unpaid = row.first_month
        while first_unpaid in months:
            first_unpaid = add_months(first_unpaid, 1)
        days_left = (due_date(first_unpaid, self._calendar) - today).days
        # The first unpaid month is the earliest due: when it is neither due within
        # 5 days nor overdue, nothing about this sponsorship is due today.
        if days_left >= 0 and days_left not in _BEFORE:
            return None, None, ""
        status = self._status(row, months, today)
        if status.lapsed:
            return "lapse", status, ""
        if status.at_risk:
            return "escalation", status, reminder_prefix("escalation", status.next_month)
        kind = _BEFORE.get(days_left) if status.months_in_arrears == 0 else "overdue"
        if kind is None:
            return None, None, ""
        in_force = plan_in_force(
            status.next_month,
            plan=row.plan,
            next_plan=row.next_plan,
            next_plan_from=row.next_plan_from,
        )
        if in_force is PaymentPlan.PAYROLL_DEDUCTION:
            return "payroll", status, kind
        return kind, status, reminder_prefix(kind, status.next_month)

    def _status(self, row: DuesTerms, months: frozenset[date], today: date) -> DuesStatus:
        return dues_status(
            first_month=row.first_month,
            plan=row.plan,
            funding=row.funding,
            paid_months=months,
            today=today,
            calendar=self._calendar,
            tariff=self._tariff,
            next_plan=row.next_plan,
            next_plan_from=row.next_plan_from,
        )

    async def _write_reminders(
        self,
        connection: AsyncConnection,
        missing: list[_Reminder],
        payers: dict[int, Payer],
        result: PlanResult,
        now: datetime,
        not_before: datetime,
    ) -> None:
        """Write the reminders not planned yet (`missing`: their keys are not in the outbox).

        The notices are made while they are written (a generator: PostgreSQL's
        copy sends them as they come, so rendering overlaps the server's work).
        """

        def notices() -> Iterator[PlannedNotice]:
            # Statuses are shared by the sponsorships of one decision (`_compute`), so a
            # group's text is filled in once and each notice only gets its name.
            groups: dict[tuple[Language, str, int], _Filled] = {}
            for reminder in missing:
                payer, status = payers[reminder.terms[0]], reminder.status
                group = (payer.language, reminder.kind, id(status))
                filled = groups.get(group)
                if filled is None:
                    filled = groups[group] = self._reminder_text(
                        payer.language, reminder.kind, status
                    )
                body, params = filled.with_name(payer.worker_name)
                yield PlannedNotice(
                    reminder.key, payer.channel, payer.recipient, filled.kind, body, params
                )
                if reminder.kind == "escalation":
                    worker = self._worker_notice(
                        reminder_key("escalation_worker", reminder.terms[0], status.next_month),
                        payer,
                        "at_risk.worker",
                        {"name": payer.worker_name, "months": status.months_in_arrears},
                    )
                    if worker is not None:
                        yield worker

        written = await dues_queries.insert_notices(
            connection, notices(), now=now, not_before=not_before, expect_new=True
        )
        for reminder in missing:
            if reminder.key in written:
                setattr(result, reminder.kind, getattr(result, reminder.kind) + 1)

    async def _write_named(
        self,
        connection: AsyncConnection,
        reminders: list[_Reminder],
        texts: dict[tuple[str, DuesStatus, Language | None], NoticeGroup],
        result: PlanResult,
        now: datetime,
        not_before: datetime,
    ) -> None:
        """Write one page's reminders from SQL (`dues_queries.insert_named_notices`).

        The rows `_write_reminders` would write, without the names and keys
        passing through Python: a reminder's text depends on its kind, its
        status and the payer's language only, so each (kind, status) is
        rendered once per language (`texts`, kept across pages) and the
        database writes each row with its worker's name put in, skipping keys
        that exist (ON CONFLICT DO NOTHING: a re-run writes nothing). The
        worker's own "at risk" notice goes with each escalation written.
        """
        if not reminders:
            return
        group_ids: dict[tuple[str, int], int] = {}
        groups: list[NoticeGroup] = []
        rows: list[tuple[str, int, int]] = []
        for reminder in reminders:
            local = (reminder.kind, id(reminder.status))
            group_id = group_ids.get(local)
            if group_id is None:
                group_id = group_ids[local] = len(group_ids)
                for language in Language:
                    groups.append(
                        self._named_text(texts, group_id, reminder.kind, reminder.status, language)
                    )
            rows.append((reminder.key, reminder.terms[0], group_id))
        written = await dues_queries.insert_named_notices(
            connection, rows, groups, now=now, not_before=not_before
        )
        counts: dict[str, int] = {}
        for _key, kind in written:
            counts[kind] = counts.get(kind, 0) + 1
        for kind, count in counts.items():
            name = kind.removeprefix("reminder.")
            setattr(result, name, getattr(result, name) + count)
        if self._worker_channel is None or not counts.get("reminder.escalation"):
            return
        # The worker is told (Indonesian) of each escalation this page wrote.
        new = {key for key, kind in written if kind == "reminder.escalation"}
        worker_rows: list[tuple[str, int, int]] = []
        worker_groups: dict[int, NoticeGroup] = {}
        for reminder in reminders:
            if reminder.key not in new:
                continue
            status, sponsorship_id = reminder.status, reminder.terms[0]
            group_id = group_ids[(reminder.kind, id(status))]
            if group_id not in worker_groups:
                worker_groups[group_id] = self._named_text(
                    texts, group_id, "at_risk.worker", status, None
                )
            worker_rows.append(
                (
                    reminder_key("escalation_worker", sponsorship_id, status.next_month),
                    sponsorship_id,
                    group_id,
                )
            )
        await dues_queries.insert_named_notices(
            connection,
            worker_rows,
            list(worker_groups.values()),
            now=now,
            not_before=not_before,
            worker_channel=self._worker_channel,
        )

    async def _lapse_named(
        self,
        connection: AsyncConnection,
        changed: Sequence[int],
        result: PlanResult,
        now: datetime,
        not_before: datetime,
    ) -> None:
        """The notices of the sponsorships that lapsed (`changed`), from SQL: the rows
        `_lapse` writes (the ASN's, the worker's, each current PIC's)."""
        if not changed:
            return
        result.lapsed += len(changed)
        groups = self._lapse_texts()
        written = await dues_queries.insert_named_notices(
            connection,
            [(lapse_asn_key(sponsorship_id), sponsorship_id, 0) for sponsorship_id in changed],
            groups[0],
            now=now,
            not_before=not_before,
        )
        count = len(written)
        if self._worker_channel is not None:
            count += len(
                await dues_queries.insert_named_notices(
                    connection,
                    [(f"lapsed:worker:{sid}", sid, 0) for sid in changed],
                    groups[1],
                    now=now,
                    not_before=not_before,
                    worker_channel=self._worker_channel,
                )
            )
        count += len(
            await dues_queries.insert_pic_lapse_notices(
                connection, changed, groups[2], now=now, not_before=not_before
            )
        )
        # New unless the sponsorship lapsed before, was reactivated and lapsed again.
        result.lapse_notices += count

    def _lapse_texts(
        self,
    ) -> tuple[list[NoticeGroup], list[NoticeGroup], list[dues_queries.PairGroup]]:
        """The lapse notices' texts: the ASN's per language, the worker's (Indonesian), the
        PIC's per language."""
        asn: list[NoticeGroup] = []
        pic: list[dues_queries.PairGroup] = []
        for language in Language:
            t = self._t(language)
            filled = _Filled.of(t, "reminder.lapsed.asn", {})
            asn.append(NoticeGroup.of(0, language, "lapsed.asn", filled.body, filled.params))
            names = {"name": dues_queries.NAME_MARK, "sponsor": dues_queries.SPONSOR_MARK}
            pic.append(
                dues_queries.PairGroup.of(
                    language,
                    "lapsed.pic",
                    t("reminder.lapsed.pic", **names),
                    params_json(names),
                )
            )
        filled = _Filled.of(self._t(Language.INDONESIAN), "reminder.lapsed.worker", {})
        worker = [
            NoticeGroup.of(0, Language.INDONESIAN, "lapsed.worker", filled.body, filled.params)
        ]
        return asn, worker, pic

    def _named_text(
        self,
        texts: dict[tuple[str, DuesStatus, Language | None], NoticeGroup],
        group_id: int,
        kind: str,
        status: DuesStatus,
        language: Language | None,
    ) -> NoticeGroup:
        """The text of a reminder of `kind` (None for `language`: the worker's notice of
        `kind`, in Indonesian) about `status`, as a `NoticeGroup` numbered `group_id`."""
        cached = texts.get((kind, status, language))
        if cached is None:
            if language is None:
                t = self._t(Language.INDONESIAN)
                rest = {"months": status.months_in_arrears}
                filled = _Filled.of(t, f"reminder.{kind}", rest)
                cached = NoticeGroup.of(0, Language.INDONESIAN, kind, filled.body, filled.params)
            else:
                filled = self._reminder_text(language, kind, status)
                cached = NoticeGroup.of(0, language, filled.kind, filled.body, filled.params)
            texts[(kind, status, language)] = cached
        return cached._replace(group_id=group_id)

    def _worker_notice(
        self, key: str, payer: Payer, kind: str, params: dict[str, Any]
    ) -> PlannedNotice | None:
        """The worker's own notice (PRODUCT 4.6: at risk, lapsed), when they can be told."""
        if self._worker_channel is None or not payer.worker_phone:
            return None
        t = self._t(Language.INDONESIAN)
        return PlannedNotice(
            key,
            self._worker_channel,
            payer.worker_phone.lstrip("+"),
            kind,
            t(f"reminder.{kind}", **params),
            params_json(params),
        )

    def _reminder_text(self, language: Language, kind: str, status: DuesStatus) -> _Filled:
        """The text of a reminder of `kind` about `status` in `language`, but for the name."""
        t = self._t(language)
        if kind == "escalation":
            rest: dict[str, Any] = {"months": status.months_in_arrears}
        else:
            rest = {
                "month": t.month(status.next_month),
                "due_date": t.date(status.next_due_date),
                "amount": t.money(status.next_amount),
            }
        filled = _Filled.of(t, f"reminder.{kind}", rest)
        # Where to pay goes below the reminder (its text only: the WhatsApp template,
        # filled from the params, stays as approved).
        where = where_to_pay(t, self._payment_channels)
        body = [*filled.body[:-1], f"{filled.body[-1]}\n\n{where}"]
        return dataclasses.replace(filled, body=body)

    async def _write_payroll(
        self,
        connection: AsyncConnection,
        payroll: dict[tuple[int, str, date], int],
        pics: dict[int, list[PicRecipient]],
        result: PlanResult,
        now: datetime,
        not_before: datetime,
    ) -> None:
        new: list[PlannedNotice] = []
        for (opd_id, kind, month), count in sorted(payroll.items()):
            for pic in pics.get(opd_id, []):
                t = self._t(pic.language)
                params = {
                    "opd": pic.opd_name,
                    "month": t.month(month),
                    "count": count,
                    "due_date": t.date(due_date(month, self._calendar)),
                }
                # A line for a month whose due date has passed says so: it is overdue,
                # not "due on" a past day (its own template too).
                overdue = kind == "overdue"
                new.append(
                    PlannedNotice(
                        payroll_key(kind, opd_id, pic.pic_id, month),
                        pic.channel,
                        pic.recipient,
                        "reminder.payroll_overdue" if overdue else "reminder.payroll",
                        t(
                            "reminder.payroll.pic_overdue" if overdue else "reminder.payroll.pic",
                            **params,
                        ),
                        params_json(params),
                    )
                )
        result.payroll += len(
            await dues_queries.insert_notices(connection, new, now=now, not_before=not_before)
        )

    async def _lapse(
        self,
        connection: AsyncConnection,
        lapsing: list[DuesTerms],
        changed: set[int],
        payers: dict[int, Payer],
        pics: dict[int, list[PicRecipient]],
        result: PlanResult,
        now: datetime,
        not_before: datetime,
    ) -> None:
        """The notices of the lapsing sponsorships that did lapse (`changed`)."""
        if not changed:
            return
        result.lapsed += len(changed)
        new: list[PlannedNotice] = []
        for row in lapsing:
            if row.sponsorship_id not in changed:
                continue
            payer = payers[row.sponsorship_id]
            t = self._t(payer.language)
            params: dict[str, Any] = {"name": payer.worker_name}
            new.append(
                PlannedNotice(
                    lapse_asn_key(row.sponsorship_id),
                    payer.channel,
                    payer.recipient,
                    "lapsed.asn",
                    t("reminder.lapsed.asn", **params),
                    params_json(params),
                )
            )
            worker = self._worker_notice(
                f"lapsed:worker:{row.sponsorship_id}",
                payer,
                "lapsed.worker",
                {"name": payer.worker_name},
            )
            if worker is not None:
                new.append(worker)
            for pic in pics.get(row.opd_id, []):
                t = self._t(pic.language)
                pic_params = {"name": payer.worker_name, "sponsor": payer.asn_name}
                new.append(
                    PlannedNotice(
                        lapse_pic_key(row.sponsorship_id, pic.pic_id),
                        pic.channel,
                        pic.recipient,
                        "lapsed.pic",
                        t("reminder.lapsed.pic", **pic_params),
                        params_json(pic_params),
                    )
                )
        new.sort(key=_key_of)
        # New unless the sponsorship lapsed before, was reactivated and lapsed again:
        # then its earlier notices' keys exist and are skipped (insert_notices).
        result.lapse_notices += len(
            await dues_queries.insert_notices(
                connection, new, now=now, not_before=not_before, expect_new=True
            )
        )
