"""Set-based reads and writes for the dues reminder planner (scheduler/reminders.py).

A handful of statements for the whole program, never one per sponsorship: the
dues-bearing sponsorships with their payer, the confirmed months of all of
them, the PICs by OPD, which reminder keys already exist, the lapse update and
the outbox rows (SQLite: one executemany with ON CONFLICT DO NOTHING;
PostgreSQL: binary COPY, or INSERT ... ON CONFLICT DO NOTHING where a key may
exist). No commit happens here; the caller owns the transaction.

On PostgreSQL the bulk statements run on the asyncpg connection under the
SQLAlchemy connection (inside its transaction): SQLAlchemy's per-row result and
parameter processing was a large part of the cost at 144,000 sponsorships.

Reminder dedupe keys are built here too (`reminder_key`), so the planner and
`cancel_reminders` (called when a payment is recorded) agree on them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    Integer,
    String,
    and_,
    cast,
    delete,
    extract,
    func,
    insert,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.months import add_months, month_start
from domain.tariff import FundingSource
from domain.vocabulary import (
    Channel,
    Language,
    OutboxStatus,
    PaymentPlan,
    PaymentStatus,
    SponsorshipStatus,
)
from storage import sponsorship_state as state
from storage.db import insert_for
from storage.models import (
    Asn,
    AuditLog,
    ChannelAccount,
    Opd,
    Outbox,
    Payment,
    Pic,
    Sponsorship,
    Worker,
)
from storage.sqlite_inline import InlineConnection

#: Sponsorships that owe dues (PRODUCT 4.4): active with BPJS, card handed over or not.
DUES_BEARING: tuple[SponsorshipStatus, ...] = (
    SponsorshipStatus.ACTIVE,
    SponsorshipStatus.CARD_HANDED_OVER,
)

#: Reminder kinds about one period of one sponsorship (cancelled by a payment of it).
SPONSORSHIP_REMINDER_KINDS: tuple[str, ...] = ("before5", "before1", "overdue", "escalation")
#: The worker's own notice about one period ("protection at risk", WhatsApp), cancelled alike.
WORKER_REMINDER_KINDS: tuple[str, ...] = ("escalation_worker",)

_T = TypeVar("_T")

#: Rows per executemany / IN list: well under SQLite's 32,766 bound parameters.
CHUNK = 2000


def reminder_key(kind: str, sponsorship_id: int, month: date) -> str:
    """Dedupe key of a reminder of `kind` about `month` of one sponsorship."""
    return f"{reminder_prefix(kind, month)}{sponsorship_id}"


@functools.lru_cache(maxsize=256)
def reminder_prefix(kind: str, month: date) -> str:
    """What the keys of every reminder of `kind` about `month` start with."""
    return f"reminder:{kind}:{month_start(month):%Y-%m}:"


def payroll_key(kind: str, opd_id: int, pic_id: int, month: date) -> str:
    """Dedupe key of a payroll reminder to one PIC of an OPD about `month`."""
    return f"reminder:payroll:{kind}:{opd_id}:{pic_id}:{month_start(month):%Y-%m}"


def lapse_asn_key(sponsorship_id: int) -> str:
    return f"lapsed:asn:{sponsorship_id}"


def lapse_pic_key(sponsorship_id: int, pic_id: int) -> str:
    return f"lapsed:pic:{sponsorship_id}:{pic_id}"


def chunked(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclasses.dataclass(slots=True, frozen=True)
class DuesTerms:
    """What decides a dues-bearing sponsorship's dues (no names: those only for new notices)."""

    sponsorship_id: int
    opd_id: int
    plan: PaymentPlan
    first_month: date
    funding: FundingSource
    next_plan: PaymentPlan | None
    next_plan_from: date | None


class Payer(NamedTuple):
    """Who to tell about one sponsorship: the ASN's account, the worker's and ASN's names.

    A named tuple: a lapse wave or a program's 5-day reminders make 100,000 of them.
    """

    worker_name: str
    asn_name: str
    channel: Channel
    recipient: str
    language: Language
    #: The worker's phone (E.164), for their own WhatsApp notices; None without one.
    worker_phone: str | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class PicRecipient:
    pic_id: int
    opd_id: int
    opd_name: str
    channel: Channel
    recipient: str
    language: Language


@dataclasses.dataclass(slots=True)
class PaidMonths:
    """Confirmed months per sponsorship id.

    Almost every sponsorship's confirmed months are one unbroken run (a payment
    must start at the first unpaid month): `runs` holds those as month indices
    (year * 12 + month - 1) of the first month and the month after the last.
    The others (gaps, overlaps) are in `exact`.
    """

    runs: dict[int, tuple[int, int]]
    exact: dict[int, set[date]]

    def months(self, sponsorship_id: int) -> frozenset[date]:
        """The confirmed months of one sponsorship."""
        exact = self.exact.get(sponsorship_id)
        if exact is not None:
            return frozenset(exact)
        run = self.runs.get(sponsorship_id)
        if run is None:
            return frozenset()
        first, end = run
        return frozenset(_month_of_index(index) for index in range(first, end))


_DUES_BEARING_SQL = text("sponsorship.status IN ('active', 'card_handed_over')")
#: SQLite: the same, the status index excluded (a unary plus; PostgreSQL has none for text).
_DUES_BEARING_BY_KEY_SQL = text("+sponsorship.status IN ('active', 'card_handed_over')")


def _month_of_index(index: int) -> date:
    year, month = divmod(index, 12)
    return date(year, month + 1, 1)


#: (id, opd_id, plan, first month, funding, next plan, next plan from) as the database
#: gives them (enum values and ISO dates as text): 144,000 rows cost least so, and
#: `terms_of` converts the few that are looked at.
TermsRow = tuple[int, int, str, str, str, str | None, str | None]

_PLANS = {plan.value: plan for plan in PaymentPlan}
_FUNDING = {source.value: source for source in FundingSource}


@functools.lru_cache(maxsize=1024)
def _month(iso: str) -> date:
    return month_start(date.fromisoformat(iso[:10]))


def terms_of(row: TermsRow) -> DuesTerms:
    """The typed terms of a row of `dues_terms` (months as month starts)."""
    sponsorship_id, opd_id, plan, first_month, funding, next_plan, next_from = row
    return DuesTerms(
        sponsorship_id,
        opd_id,
        _PLANS[plan],
        _month(first_month),
        _FUNDING[funding],
        None if next_plan is None else _PLANS[next_plan],
        None if next_from is None else _month(next_from),
    )


async def _asyncpg(connection: AsyncConnection) -> Any | None:
    """The asyncpg connection under `connection`, in its transaction; None on other drivers.

    SQLAlchemy begins the asyncpg transaction at its first statement: when none
    ran yet, a trivial one does, so what runs on the asyncpg connection belongs
    to the caller's transaction.
    """
    if connection.dialect.driver != "asyncpg":
        return None
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


def _sql(statement: Any, dialect: Dialect) -> str:
    # Literal binds: a page's LIMIT is a bound parameter otherwise (only ints are bound).
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


async def _fetch(connection: AsyncConnection, statement: Any) -> list[Any]:
    """All rows of a statement without bound parameters, as plain tuples.

    On SQLite's in-loop connection the compiled SQL runs on sqlite3 directly
    (inside the same transaction): building SQLAlchemy rows is a third of the
    cost of a 144,000-row read. On PostgreSQL it runs on the asyncpg
    connection, whose records index and unpack like tuples.
    """
    if connection.dialect.name == "sqlite":
        driver = (await connection.get_raw_connection()).driver_connection
        if isinstance(driver, InlineConnection):
            return driver.sqlite3_connection.execute(_sql(statement, connection.dialect)).fetchall()
    asyncpg_connection = await _asyncpg(connection)
    if asyncpg_connection is not None:
        return list(await asyncpg_connection.fetch(_sql(statement, connection.dialect)))
    return list((await connection.execute(statement)).tuples().all())


async def dues_terms(
    connection: AsyncConnection, *, after: int | None = None, limit: int | None = None
) -> list[TermsRow]:
    """Every dues-bearing sponsorship's plan, first month, funding and pending plan change.

    As text (`TermsRow`): SQLAlchemy's per-value processing of enums and dates
    was most of the cost of this read at 144,000 rows. With `limit`, one page
    in id order: the first `limit` dues-bearing sponsorships with an id above
    `after` (keyset pagination: each page is one range scan of the primary key,
    however far the run has got).
    """
    statement = select(
        Sponsorship.id,
        Sponsorship.opd_id,
        type_coerce(Sponsorship.plan, String),
        cast(Sponsorship.first_month, String),
        type_coerce(Sponsorship.funding_source, String),
        type_coerce(Sponsorship.next_plan, String),
        cast(Sponsorship.next_plan_from, String),
    )
    if limit is not None and connection.dialect.name == "sqlite":
        # A page is a range of the primary key. Left to itself SQLite's planner took
        # the status index (no statistics), reading and sorting every dues-bearing row
        # above `after` for each page (1.06 s of 2 s of reads at 144,000 on a re-run;
        # quadratic in the province); "+status" keeps the index out of it.
        statement = statement.where(_DUES_BEARING_BY_KEY_SQL)
    else:
        statement = statement.where(_DUES_BEARING_SQL)
    if after is not None:
        # A literal (an int): `_fetch` runs statements without bound parameters.
        statement = statement.where(text(f"sponsorship.id > {int(after)}"))
    if limit is not None:
        statement = statement.order_by(Sponsorship.id).limit(int(limit))
    return await _fetch(connection, statement)


#: PostgreSQL: days since 2000-01-01 of each sponsorship's earliest confirmed payment, and
#: of its latest one packed with that payment's months (days * 2**16 + months; a payment
#: covers far fewer than 2**16 months). Integer arithmetic on dates only: EXTRACT (numeric
#: since PostgreSQL 14) of year and month for 900,000 payments cost 0.65 s of server time;
#: the days are turned into months per sponsorship in Python, from a small cache (payments
#: start on few distinct months).
_PG_PAID_SPANS = f"""
SELECT sponsorship_id,
       min(first_month - DATE '2000-01-01'),
       max((first_month - DATE '2000-01-01')::bigint * {1 << 16} + months),
       sum(months)
FROM payment
WHERE status IN ({{statuses}}){{id_range}}
GROUP BY sponsorship_id
"""

#: SQLite (dates as ISO text): the earliest confirmed payment's month as text (a plain
#: min), and the latest one's year * 12 + month packed with its months. Two substr() are
#: 40% cheaper than strftime(), and one month computation per payment instead of two
#: took the query from 1.0 s to 0.8 s over 900,000 payments.
_SQLITE_PAID_SPANS = f"""
SELECT sponsorship_id,
       min(first_month),
       max((substr(first_month, 1, 4) * 12 + substr(first_month, 6, 2)) * {1 << 16} + months),
       sum(months)
FROM payment
WHERE status IN ({{statuses}}){{id_range}}
GROUP BY sponsorship_id
"""


def _statuses_sql(statuses: tuple[PaymentStatus, ...]) -> str:
    """`statuses` as the SQL list of their (constant, quote-free) values."""
    return ", ".join(f"'{status.value}'" for status in statuses)


#: What counts as paid: for the dues themselves (paid-until, arrears), only what the
#: PIC confirmed; for reminders, also what the ASN recorded and the PIC has not yet
#: decided (`including_recorded`).
_CONFIRMED = (PaymentStatus.CONFIRMED,)
_CONFIRMED_OR_RECORDED = (PaymentStatus.CONFIRMED, PaymentStatus.RECORDED)

_DAY_ZERO = date(2000, 1, 1).toordinal()


@functools.lru_cache(maxsize=4096)
def _month_index_of_iso(iso: str) -> int:
    """year * 12 + month - 1 of an ISO date ("2026-11-01")."""
    return int(iso[:4]) * 12 + int(iso[5:7]) - 1


@functools.lru_cache(maxsize=4096)
def _month_index_of_day(day: int) -> int:
    """year * 12 + month - 1 of the day `day` days after 2000-01-01."""
    value = date.fromordinal(_DAY_ZERO + day)
    return value.year * 12 + value.month - 1


def _id_range_sql(id_range: tuple[int, int] | None) -> str:
    """The WHERE clause's part keeping payments of sponsorships `id_range` (inclusive)."""
    if id_range is None:
        return ""
    low, high = id_range
    return f" AND sponsorship_id BETWEEN {int(low)} AND {int(high)}"


async def _runs(
    connection: AsyncConnection,
    statuses: tuple[PaymentStatus, ...],
    id_range: tuple[int, int] | None = None,
) -> tuple[dict[int, tuple[int, int]], list[int]]:
    """The confirmed months that are one run, per sponsorship, and the sponsorships that are not.

    Per sponsorship: the first paid month index, the index after its last (the
    end of the payment starting latest) and the months counted. Payments never
    overlap (a month already recorded is refused), so when the months counted
    fill that span, the months are one run.
    """
    runs: dict[int, tuple[int, int]] = {}
    irregular: list[int] = []
    driver = await _asyncpg(connection)
    if driver is not None:
        index = _month_index_of_day
        query = _PG_PAID_SPANS.format(
            statuses=_statuses_sql(statuses), id_range=_id_range_sql(id_range)
        )
        for sponsorship_id, first_day, last, total in await driver.fetch(query):
            first = index(first_day)
            end = index(last >> 16) + (last & 0xFFFF)
            if total == end - first:
                runs[sponsorship_id] = (first, end)
            else:
                irregular.append(sponsorship_id)
        return runs, irregular
    if connection.dialect.name == "sqlite":
        iso_index = _month_index_of_iso
        spans = text(
            _SQLITE_PAID_SPANS.format(
                statuses=_statuses_sql(statuses), id_range=_id_range_sql(id_range)
            )
        )
        for sponsorship_id, first_iso, last, total in await _fetch(connection, spans):
            first = iso_index(first_iso)
            end = (last >> 16) - 1 + (last & 0xFFFF)
            if total == end - first:
                runs[sponsorship_id] = (first, end)
            else:
                irregular.append(sponsorship_id)
        return runs, irregular
    # Other drivers: the portable form (EXTRACT), slower.
    column = Payment.first_month
    start = (
        cast(extract("year", column), Integer) * 12 + cast(extract("month", column), Integer) - 1
    )
    aggregated = await _fetch(
        connection,
        select(
            Payment.sponsorship_id,
            func.min(start),
            func.max(start + Payment.months),
            func.sum(Payment.months),
        )
        .where(text(f"payment.status IN ({_statuses_sql(statuses)}){_id_range_sql(id_range)}"))
        .group_by(Payment.sponsorship_id),
    )
    for sponsorship_id, first, end, total in aggregated:
        if total == end - first:
            runs[sponsorship_id] = (first, end)
        else:
            irregular.append(sponsorship_id)
    return runs, irregular


async def confirmed_months(
    connection: AsyncConnection,
    *,
    including_recorded: bool = False,
    id_range: tuple[int, int] | None = None,
) -> PaidMonths:
    """The confirmed months of every sponsorship, aggregated per sponsorship in the database.

    One GROUP BY gives each sponsorship's first paid month index, the index after
    its last and the months counted; when the count fills the span exactly the
    months are one run. The rare others are read row by row.
    `including_recorded`: also the months of payments still waiting for the PIC
    (what the reminder planner must not remind about). `id_range` (first, last
    sponsorship id, inclusive): only those sponsorships' (one page of the planner).
    """
    statuses = _CONFIRMED_OR_RECORDED if including_recorded else _CONFIRMED
    runs, irregular = await _runs(connection, statuses, id_range)
    exact: dict[int, set[date]] = {}
    for part in chunked(irregular):
        rows = await connection.execute(
            select(Payment.sponsorship_id, Payment.first_month, Payment.months).where(
                Payment.status.in_(statuses), Payment.sponsorship_id.in_(part)
            )
        )
        for sponsorship_id, first_month, months in rows.tuples():
            exact.setdefault(sponsorship_id, set()).update(
                add_months(first_month, offset) for offset in range(months)
            )
    return PaidMonths(runs, exact)


_PAYERS = (
    select(
        Sponsorship.id,
        Worker.full_name,
        Asn.full_name,
        ChannelAccount.channel,
        ChannelAccount.external_id,
        ChannelAccount.language,
        Worker.phone_e164,
    )
    .join(Worker, Worker.id == Sponsorship.worker_id)
    .join(Asn, Asn.id == Sponsorship.asn_id)
    .join(ChannelAccount, ChannelAccount.id == Asn.channel_account_id)
)


#: Above this many sponsorships, all payers are read in one pass instead of by IN lists.
_READ_ALL_PAYERS_FROM = 10_000


async def payers(connection: AsyncConnection, sponsorship_ids: Sequence[int]) -> dict[int, Payer]:
    """Names and the ASN's account for these sponsorships (the one-transaction planner;
    a chunked planner's pages have the database put the names in).

    A few are read by IN-list chunks; many (a lapse wave, the 5-day reminders
    of a whole program) with one pass over the dues-bearing ones.
    """
    wanted = sorted(set(sponsorship_ids))
    if not wanted:
        return {}
    channels: dict[str, Channel] = {channel.value: channel for channel in Channel}
    languages: dict[str, Language] = {language.value: language for language in Language}
    plain = _PAYERS.with_only_columns(
        Sponsorship.id,
        Worker.full_name,
        Asn.full_name,
        type_coerce(ChannelAccount.channel, String),
        ChannelAccount.external_id,
        type_coerce(ChannelAccount.language, String),
        Worker.phone_e164,
    )
    driver = await _asyncpg(connection)
    if driver is not None and len(wanted) < _READ_ALL_PAYERS_FROM:
        # By the ids, one array: the server looks each up by its primary key.
        rows = await driver.fetch(
            _sql(plain.where(text("sponsorship.id = ANY($1::int[])")), connection.dialect),
            wanted,
        )
    elif len(wanted) >= _READ_ALL_PAYERS_FROM:
        rows = await _fetch(connection, plain.where(_DUES_BEARING_SQL))
    else:
        rows = []
        for part in chunked(wanted):
            result = await connection.execute(plain.where(Sponsorship.id.in_(part)))
            rows.extend(result.tuples())
    wanted_set = set(wanted)
    return {
        sponsorship_id: Payer(
            worker, asn, channels[channel], external_id, languages[language], phone
        )
        for sponsorship_id, worker, asn, channel, external_id, language, phone in rows
        if sponsorship_id in wanted_set
    }


async def paid_since(
    connection: AsyncConnection, id_range: tuple[int, int], since: datetime
) -> set[int]:
    """The sponsorships in `id_range` (inclusive) with a payment recorded or decided after
    `since`: a chunked planner's page read before then must not remind them now."""
    low, high = id_range
    result = await connection.execute(
        select(Payment.sponsorship_id)
        .where(
            Payment.sponsorship_id.between(low, high),
            or_(Payment.recorded_at > since, Payment.decided_at > since),
        )
        .distinct()
    )
    return set(result.scalars())


async def pics_by_opd(connection: AsyncConnection) -> dict[int, list[PicRecipient]]:
    """The current, bound PICs of every OPD."""
    result = await connection.execute(
        select(
            Pic.id,
            Pic.opd_id,
            Opd.name,
            ChannelAccount.channel,
            ChannelAccount.external_id,
            ChannelAccount.language,
        )
        .join(Opd, Opd.id == Pic.opd_id)
        .join(ChannelAccount, ChannelAccount.id == Pic.channel_account_id)
        .where(Pic.removed_at.is_(None))
        .order_by(Pic.id)
    )
    pics: dict[int, list[PicRecipient]] = {}
    for row in result.tuples():
        pics.setdefault(row[1], []).append(PicRecipient(*row))
    return pics


async def existing_keys(connection: AsyncConnection, prefixes: Iterable[str]) -> set[str]:
    """The outbox keys starting with any of `prefixes` (one range scan of the unique index each).

    Reminder keys start with kind and period (`reminder_prefix`), so this reads
    only the keys of the periods the planner is about to plan, without binding
    one parameter per key.
    """
    found: set[str] = set()
    driver = await _asyncpg(connection)
    sqlite = None
    if connection.dialect.name == "sqlite":
        inline = (await connection.get_raw_connection()).driver_connection
        if isinstance(inline, InlineConnection):
            sqlite = inline.sqlite3_connection
    for prefix in sorted(set(prefixes)):
        # ":" + 1 == ";": every key with the prefix sorts below prefix[:-1] + ";".
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        if driver is not None:
            rows = await driver.fetch(_KEYS_IN_RANGE, prefix, upper)
            found.update(row[0] for row in rows)
            continue
        if sqlite is not None:
            found.update(key for (key,) in sqlite.execute(_SQLITE_KEYS_IN_RANGE, (prefix, upper)))
            continue
        result = await connection.execute(
            select(Outbox.dedupe_key).where(Outbox.dedupe_key >= prefix, Outbox.dedupe_key < upper)
        )
        found.update(result.scalars())
    return found


async def keys_present(connection: AsyncConnection, keys: Sequence[str]) -> set[str]:
    """Which of `keys` the outbox holds: one probe of the unique index per key, in one
    statement (a chunked planner's page, in its read transaction).

    A page's keys are not one range of the index (a key ends in the sponsorship
    id as text: "12" sorts between "115000" and "120000"), so `existing_keys`'
    range scans would read every key of the period for each page.
    """
    if not keys:
        return set()
    driver = await _asyncpg(connection)
    if driver is not None:
        rows = await driver.fetch(_PG_KEYS_PRESENT, list(keys))
        return {row[0] for row in rows}
    if connection.dialect.name == "sqlite":
        inline = (await connection.get_raw_connection()).driver_connection
        if isinstance(inline, InlineConnection):
            cursor = inline.sqlite3_connection.execute(_SQLITE_KEYS_PRESENT, (json.dumps(keys),))
            return {key for (key,) in cursor}
    found: set[str] = set()
    for part in chunked(keys):
        result = await connection.execute(
            select(Outbox.dedupe_key).where(Outbox.dedupe_key.in_(part))
        )
        found.update(result.scalars())
    return found


_PG_KEYS_PRESENT = "SELECT dedupe_key FROM outbox WHERE dedupe_key = ANY($1::text[])"
#: The keys read into a table first (as `_SQLITE_NAMED` does), then one index probe each.
_SQLITE_KEYS_PRESENT = """
WITH k AS MATERIALIZED (SELECT value AS key FROM json_each(?))
SELECT o.dedupe_key FROM k JOIN outbox o ON o.dedupe_key = k.key
"""

_KEYS_IN_RANGE = "SELECT dedupe_key FROM outbox WHERE dedupe_key >= $1 AND dedupe_key < $2"
_SQLITE_KEYS_IN_RANGE = "SELECT dedupe_key FROM outbox WHERE dedupe_key >= ? AND dedupe_key < ?"


class PlannedNotice(NamedTuple):
    """One outbox row to write: pending, due at the run's `not_before`."""

    dedupe_key: str
    channel: Channel
    recipient: str
    #: Also names the WhatsApp template ("reminder.before5" -> "reminder_before5").
    kind: str
    body: str
    #: The template's parameters as JSON text (`params_json`): the planner writes
    #: 100,000 of them, most from one text per group with only the name put in.
    params: str


def params_json(params: dict[str, Any]) -> str:
    """`params` as the outbox's `params` column holds them (what SQLAlchemy's JSON type writes)."""
    return json.dumps(params)


_OUTBOX_COLUMNS = (
    "dedupe_key",
    "channel",
    "recipient",
    "kind",
    "body",
    "template",
    "params",
    "status",
    "not_before",
    "attempts",
    "created_at",
)


@functools.lru_cache(maxsize=64)
def _template(kind: str) -> str:
    return kind.replace(".", "_")


async def insert_notices(
    connection: AsyncConnection,
    notices: Iterable[PlannedNotice],
    *,
    now: datetime,
    not_before: datetime,
    expect_new: bool = False,
) -> set[str]:
    """Insert pending outbox rows; existing dedupe keys are skipped.

    Returns the dedupe keys actually written. `expect_new`: the caller has
    checked that (nearly) none of the keys exist, which lets PostgreSQL copy
    the rows in (see `_insert_asyncpg`); the result is the same either way.
    `notices` may be a generator: PostgreSQL's copy consumes it while it sends,
    so making the notices (rendering them) overlaps the server's inserting.

    On SQLite's in-loop connection as one sqlite3 `executemany` inside the same
    transaction, each value bound by its column's type (SQLAlchemy's per-row
    parameter handling was 2.5 s of 100,000 reminders); on PostgreSQL on the
    asyncpg connection; elsewhere through SQLAlchemy with RETURNING.
    """
    asyncpg_connection = await _asyncpg(connection)
    if asyncpg_connection is not None:
        return await _insert_asyncpg(
            asyncpg_connection, notices, now=now, not_before=not_before, expect_new=expect_new
        )
    notices = list(notices)
    if not notices:
        return set()
    driver = None
    if connection.dialect.name == "sqlite":
        driver = (await connection.get_raw_connection()).driver_connection
    if isinstance(driver, InlineConnection):
        return _insert_sqlite(
            connection, driver.sqlite3_connection, notices, now=now, not_before=not_before
        )
    written: set[str] = set()
    statement = (
        insert_for(connection.dialect.name)(Outbox)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Outbox.dedupe_key)
    )
    for part in chunked(notices):
        result = await connection.execute(
            statement,
            [
                {
                    "dedupe_key": notice.dedupe_key,
                    "channel": notice.channel,
                    "recipient": notice.recipient,
                    "kind": notice.kind,
                    "body": notice.body,
                    "template": _template(notice.kind),
                    "params": json.loads(notice.params),
                    "status": OutboxStatus.PENDING,
                    "not_before": not_before,
                    "attempts": 0,
                    "created_at": now,
                }
                for notice in part
            ],
        )
        written.update(result.scalars())
    return written


#: PostgreSQL: a batch as arrays in one statement (one round trip, no per-row binds).
_INSERT_UNNEST = f"""
INSERT INTO outbox ({", ".join(_OUTBOX_COLUMNS)})
SELECT k, c, r, d, b, t, p::json, '{OutboxStatus.PENDING.value}', $8, 0, $9
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[]) AS u(k, c, r, d, b, t, p)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key
"""

#: Rows per unnest statement.
_UNNEST_BATCH = 20_000

#: SQLSTATE of a unique violation (asyncpg.UniqueViolationError carries it).
_UNIQUE_VIOLATION = "23505"


async def _insert_asyncpg(
    driver: Any,
    notices: Iterable[PlannedNotice],
    *,
    now: datetime,
    not_before: datetime,
    expect_new: bool,
) -> set[str]:
    """The PostgreSQL path of `insert_notices`, on the asyncpg connection of the transaction.

    Rows expected new go in by binary COPY straight into the outbox, inside a
    savepoint: COPY writes heap pages in batches and encodes values without
    asyncpg's per-element array checks (104,000 reminders: about half the
    server time and client time of INSERT ... SELECT FROM unnest), and it
    sends while `notices` is still being produced. COPY has no ON CONFLICT: if
    a key exists after all (an earlier lapse's notice, or a concurrent planner
    committed it first: COPY waits for that transaction to end), the copy
    fails with a unique violation, the savepoint is rolled back and the rows go
    through INSERT ... ON CONFLICT DO NOTHING like the others, which returns
    the keys it wrote.
    """
    iterator = iter(notices)
    first = next(iterator, None)
    if first is None:
        return set()
    every = itertools.chain((first,), iterator)
    produced: list[PlannedNotice] = []
    if expect_new:
        pending = OutboxStatus.PENDING.value
        channels = {channel: channel.value for channel in Channel}

        def records() -> Iterator[tuple[Any, ...]]:
            for notice in every:
                produced.append(notice)
                key, channel, recipient, kind, body, params = notice
                yield (
                    key,
                    channels[channel],
                    recipient,
                    kind,
                    body,
                    _template(kind),
                    params,
                    pending,
                    not_before,
                    0,
                    now,
                )

        await driver.execute("SAVEPOINT planned_notices")
        try:
            await driver.copy_records_to_table("outbox", columns=_OUTBOX_COLUMNS, records=records())
        except Exception as error:
            if getattr(error, "sqlstate", None) != _UNIQUE_VIOLATION:
                raise
            await driver.execute("ROLLBACK TO SAVEPOINT planned_notices")
            await driver.execute("RELEASE SAVEPOINT planned_notices")
        else:
            await driver.execute("RELEASE SAVEPOINT planned_notices")
            return {notice.dedupe_key for notice in produced}
    produced.extend(every)
    written: set[str] = set()
    for part in chunked(produced, _UNNEST_BATCH):
        rows = await driver.fetch(
            _INSERT_UNNEST,
            [notice.dedupe_key for notice in part],
            [notice.channel.value for notice in part],
            [notice.recipient for notice in part],
            [notice.kind for notice in part],
            [notice.body for notice in part],
            [_template(notice.kind) for notice in part],
            [notice.params for notice in part],
            not_before,
            now,
        )
        written.update(row[0] for row in rows)
    return written


def _insert_sqlite(
    connection: AsyncConnection,
    sqlite: sqlite3.Connection,
    notices: Sequence[PlannedNotice],
    *,
    now: datetime,
    not_before: datetime,
) -> set[str]:
    bind = _sqlite_binds(connection.dialect)
    channels = {channel: bind("channel", channel) for channel in Channel}
    templates: dict[str, str] = {}
    pending = bind("status", OutboxStatus.PENDING)
    due = bind("not_before", not_before)
    created = bind("created_at", now)
    values = []
    for key, channel, recipient, kind, body, params in notices:
        template = templates.get(kind)
        if template is None:
            template = templates[kind] = _template(kind)
        values.append(
            (
                key,
                channels[channel],
                recipient,
                kind,
                body,
                template,
                params,
                pending,
                due,
                0,
                created,
            )
        )
    sql = (
        f"INSERT INTO outbox ({', '.join(_OUTBOX_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in _OUTBOX_COLUMNS)}) "
        "ON CONFLICT (dedupe_key) DO NOTHING"
    )
    # Inside this (BEGIN IMMEDIATE) transaction nobody else writes, and new rows
    # get ids above the current largest: those are exactly the rows written.
    (largest,) = sqlite.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
    before = sqlite.total_changes
    sqlite.executemany(sql, values)
    if sqlite.total_changes - before == len(values):
        return {notice.dedupe_key for notice in notices}
    cursor = sqlite.execute("SELECT dedupe_key FROM outbox WHERE id > ?", (largest,))
    return {key for (key,) in cursor.fetchall()}


#: Stands for the name in a `NoticeGroup`'s body; `json.dumps` of it in its params. Not a
#: character any text of the catalogs, month, date or amount holds (`NoticeGroup.of` checks).
NAME_MARK = "\x01"
_NAME_MARK_JSON = json.dumps(NAME_MARK)


class NoticeGroup(NamedTuple):
    """The text of many notices that differ only in the name they carry.

    `body` holds `NAME_MARK` where the name goes, `params` (the params JSON)
    its JSON string: the database puts each notice's name in
    (`insert_named_notices`), so the rows are written from SQL, not one by one.
    """

    group_id: int
    #: The payer's language this text is in (`Language.value`); `insert_named_notices`
    #: picks the group of each sponsorship's ASN account's language.
    language: str
    kind: str
    body: str
    params: str

    @classmethod
    def of(
        cls,
        group_id: int,
        language: Language,
        kind: str,
        body: Sequence[str],
        params: tuple[str, str],
    ) -> NoticeGroup:
        """From a text split where the name goes (`body`) and the params JSON before and
        after the name's JSON string."""
        if any(NAME_MARK in part for part in (*body, *params)):  # pragma: no cover - never
            raise ValueError(f"a text of {kind} holds the name's mark: {body}")
        return cls(
            group_id,
            language.value,
            kind,
            NAME_MARK.join(body),
            params[0] + _NAME_MARK_JSON + params[1],
        )


#: Who a named notice goes to: the sponsorship's ASN (their account's channel, id and
#: language), or the worker (on the given channel, their phone without "+"; the group's
#: language is not looked at: the worker's notices are in Indonesian).
_ASN_RECIPIENT = (
    "ca.channel",
    "ca.external_id",
    "JOIN asn a ON a.id = s.asn_id JOIN channel_account ca ON ca.id = a.channel_account_id",
    # PostgreSQL: one condition on both (it joined the groups by id alone first, before
    # the account was read, and looked up every name and account twice: 220 ms a page of
    # 3,600 against 155 ms). SQLite (`_SQLITE_ON`) needs the plain pair for its index.
    "g.gid || ':' || g.language = u.gid || ':' || ca.language",
    "",
)
_SQLITE_ON = {_ASN_RECIPIENT[3]: "g.gid = u.gid AND g.language = ca.language"}


def _worker_recipient(channel: Channel) -> tuple[str, str, str, str, str]:
    return (
        f"'{channel.value}'",
        "ltrim(w.phone_e164, '+')",
        "",
        "g.gid = u.gid",
        " AND w.phone_e164 <> ''",
    )


#: PostgreSQL: one page's named notices in one statement: (key, sponsorship, group)
#: arrays joined to the names and the groups' texts (arrays too).
_PG_NAMED = """
INSERT INTO outbox ({columns})
SELECT u.k, {channel}, {recipient}, g.kind, replace(g.body, $9, w.full_name), g.template,
       replace(g.params, $10, to_json(w.full_name)::text)::json, '{pending}',
       $11::timestamptz, 0, $12::timestamptz
FROM unnest($1::text[], $2::bigint[], $3::int[]) AS u(k, sid, gid)
JOIN sponsorship s ON s.id = u.sid
JOIN worker w ON w.id = s.worker_id {join}
JOIN unnest($4::int[], $5::text[], $6::text[], $7::text[], $8::text[],
            $13::text[]) AS g(gid, language, kind, body, params, template)
  ON {on}
WHERE true{where}
ORDER BY u.k
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key, kind
"""

#: SQLite: the same from two JSON arrays (rows, groups), each read once into a table; a
#: key that exists is left out before its row is built (a re-run: one index probe a row,
#: not the join, the text and the sort of a row ON CONFLICT then drops).
_SQLITE_NAMED = """
WITH u AS MATERIALIZED (
    SELECT json_extract(value, '$[0]') AS k, json_extract(value, '$[1]') AS sid,
           json_extract(value, '$[2]') AS gid
    FROM json_each(?)
), g AS MATERIALIZED (
    SELECT json_extract(value, '$[0]') AS gid, json_extract(value, '$[1]') AS language,
           json_extract(value, '$[2]') AS kind, json_extract(value, '$[3]') AS body,
           json_extract(value, '$[4]') AS params, json_extract(value, '$[5]') AS template
    FROM json_each(?)
)
INSERT INTO outbox ({columns})
SELECT u.k, {channel}, {recipient}, g.kind, replace(g.body, ?, w.full_name), g.template,
       replace(g.params, ?, json_quote(w.full_name)), ?, ?, 0, ?
FROM u
JOIN sponsorship s ON s.id = u.sid
JOIN worker w ON w.id = s.worker_id {join}
JOIN g ON {on}
WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.dedupe_key = u.k){where}
ORDER BY u.k
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key, kind
"""


async def insert_named_notices(
    connection: AsyncConnection,
    rows: Sequence[tuple[str, int, int]],
    groups: Sequence[NoticeGroup],
    *,
    now: datetime,
    not_before: datetime,
    worker_channel: Channel | None = None,
) -> list[tuple[str, str]]:
    """Write pending notices from SQL: each row (dedupe key, sponsorship id, group id) gets
    its group's text with its worker's name put in; existing keys are skipped.

    To the sponsorship's ASN (the group of their account's language), or with
    `worker_channel` to the worker on that channel (only workers with a phone).
    Returns (dedupe key, kind) of the rows written. The same rows as
    `insert_notices` of the notices rendered in Python (the params JSON may
    spell a non-ASCII character of a name as itself rather than as a \\u
    escape: the same JSON value). The names never leave the database.
    """
    if not rows:
        return []
    channel, recipient, join, on, where = (
        _ASN_RECIPIENT if worker_channel is None else _worker_recipient(worker_channel)
    )
    parts = {
        "columns": ", ".join(_OUTBOX_COLUMNS),
        "channel": channel,
        "recipient": recipient,
        "join": join,
        "on": on,
        "where": where,
    }
    driver = await _asyncpg(connection)
    if driver is not None:
        written = await driver.fetch(
            _PG_NAMED.format(pending=OutboxStatus.PENDING.value, **parts),
            [row[0] for row in rows],
            [row[1] for row in rows],
            [row[2] for row in rows],
            [group.group_id for group in groups],
            [group.language for group in groups],
            [group.kind for group in groups],
            [group.body for group in groups],
            [group.params for group in groups],
            NAME_MARK,
            _NAME_MARK_JSON,
            not_before,
            now,
            [_template(group.kind) for group in groups],
        )
        return [(record[0], record[1]) for record in written]
    bind = _sqlite_binds(connection.dialect)
    parts["on"] = _SQLITE_ON.get(on, on)
    result = await connection.exec_driver_sql(
        _SQLITE_NAMED.format(**parts),
        (
            json.dumps(rows, ensure_ascii=False),
            json.dumps([(*group, _template(group.kind)) for group in groups], ensure_ascii=False),
            NAME_MARK,
            _NAME_MARK_JSON,
            bind("status", OutboxStatus.PENDING),
            bind("not_before", not_before),
            bind("created_at", now),
        ),
    )
    return [(key, kind) for key, kind in result.tuples()]


#: Stands for the second name (the sponsor's) in a `PairGroup`'s text.
SPONSOR_MARK = "\x02"
_SPONSOR_MARK_JSON = json.dumps(SPONSOR_MARK)


class PairGroup(NamedTuple):
    """The text of a lapse's notice to a PIC, naming the worker and the sponsor (ASN).

    The body is split where the names go (`body`: before, between, after;
    `worker_first`: which comes first in this language), as is the params JSON
    (`params`: the worker's JSON string goes first): the database joins the
    pieces, so neither name is ever searched for in the other.
    """

    language: str
    kind: str
    body: tuple[str, str, str]
    worker_first: bool
    params: tuple[str, str, str]

    @classmethod
    def of(cls, language: Language, kind: str, body: str, params: str) -> PairGroup:
        """From a body and a params JSON holding `NAME_MARK` for the worker's name and
        `SPONSOR_MARK` for the sponsor's (their JSON strings in the params), once each."""
        marks = (NAME_MARK, SPONSOR_MARK)
        if (
            sorted(body.count(mark) for mark in marks) != [1, 1]
            or params.count(_NAME_MARK_JSON) + params.count(_SPONSOR_MARK_JSON) != 2
        ):  # pragma: no cover - the catalog's texts
            raise ValueError(f"the text of {kind} must name the worker and the sponsor once")
        worker_first = body.index(NAME_MARK) < body.index(SPONSOR_MARK)
        first, second = marks if worker_first else marks[::-1]
        head, _, rest = body.partition(first)
        middle, _, tail = rest.partition(second)
        params_head, _, params_rest = params.partition(_NAME_MARK_JSON)
        params_middle, _, params_tail = params_rest.partition(_SPONSOR_MARK_JSON)
        return cls(
            language.value,
            kind,
            (head, middle, tail),
            worker_first,
            (params_head, params_middle, params_tail),
        )


#: A lapse notice to a PIC: key, the PIC's account, the text with both names put in.
_PIC_LAPSE_SELECT = """SELECT 'lapsed:pic:' || u.sid || ':' || p.id, pca.channel, pca.external_id,
       g.kind,
       g.b0 || CASE WHEN g.wf THEN w.full_name ELSE a.full_name END || g.b1
            || CASE WHEN g.wf THEN a.full_name ELSE w.full_name END || g.b2,
       g.template,"""
#: Each lapsed sponsorship (u.sid) with its names and every current PIC of its OPD.
_PIC_LAPSE_JOINS = """JOIN sponsorship s ON s.id = u.sid
JOIN worker w ON w.id = s.worker_id
JOIN asn a ON a.id = s.asn_id
JOIN pic p ON p.opd_id = s.opd_id AND p.removed_at IS NULL
JOIN opd o ON o.id = p.opd_id
JOIN channel_account pca ON pca.id = p.channel_account_id"""

#: PostgreSQL: the notices of lapses to every current PIC of each sponsorship's OPD.
_PG_PIC_LAPSES = f"""
INSERT INTO outbox ({", ".join(_OUTBOX_COLUMNS)})
{_PIC_LAPSE_SELECT}
       (g.p0 || to_json(w.full_name)::text || g.p1 || to_json(a.full_name)::text || g.p2)::json,
       '{OutboxStatus.PENDING.value}', $3::timestamptz, 0, $4::timestamptz
FROM unnest($1::bigint[]) AS u(sid)
{_PIC_LAPSE_JOINS}
JOIN json_to_recordset($2::json) AS g(
    language text, kind text, template text, b0 text, b1 text, b2 text, wf boolean,
    p0 text, p1 text, p2 text
) ON g.language = pca.language
ORDER BY 1
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key
"""

#: SQLite: the same.
_SQLITE_PIC_LAPSES = f"""
WITH u AS MATERIALIZED (SELECT value AS sid FROM json_each(?)),
g AS MATERIALIZED (
    SELECT json_extract(value, '$.language') AS language,
           json_extract(value, '$.kind') AS kind,
           json_extract(value, '$.template') AS template,
           json_extract(value, '$.b0') AS b0, json_extract(value, '$.b1') AS b1,
           json_extract(value, '$.b2') AS b2, json_extract(value, '$.wf') AS wf,
           json_extract(value, '$.p0') AS p0, json_extract(value, '$.p1') AS p1,
           json_extract(value, '$.p2') AS p2
    FROM json_each(?)
)
INSERT INTO outbox ({", ".join(_OUTBOX_COLUMNS)})
{_PIC_LAPSE_SELECT}
       g.p0 || json_quote(w.full_name) || g.p1 || json_quote(a.full_name) || g.p2,
       ?, ?, 0, ?
FROM u
{_PIC_LAPSE_JOINS}
JOIN g ON g.language = pca.language
WHERE true
ORDER BY 1
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key
"""


async def insert_pic_lapse_notices(
    connection: AsyncConnection,
    sponsorship_ids: Sequence[int],
    groups: Sequence[PairGroup],
    *,
    now: datetime,
    not_before: datetime,
) -> list[str]:
    """Tell every current PIC of each sponsorship's OPD that it lapsed (`lapse_pic_key`),
    in the PIC's language (`groups`: one per language), from SQL; existing keys are
    skipped. Returns the keys written."""
    if not sponsorship_ids:
        return []
    records = json.dumps(
        [
            {
                "language": group.language,
                "kind": group.kind,
                "template": _template(group.kind),
                "b0": group.body[0],
                "b1": group.body[1],
                "b2": group.body[2],
                "wf": group.worker_first,
                "p0": group.params[0],
                "p1": group.params[1],
                "p2": group.params[2],
            }
            for group in groups
        ],
        ensure_ascii=False,
    )
    driver = await _asyncpg(connection)
    if driver is not None:
        rows = await driver.fetch(_PG_PIC_LAPSES, list(sponsorship_ids), records, not_before, now)
        return [row[0] for row in rows]
    bind = _sqlite_binds(connection.dialect)
    result = await connection.exec_driver_sql(
        _SQLITE_PIC_LAPSES,
        (
            json.dumps(list(sponsorship_ids)),
            records,
            bind("status", OutboxStatus.PENDING),
            bind("not_before", not_before),
            bind("created_at", now),
        ),
    )
    return [key for (key,) in result.tuples()]


def _sqlite_binds(dialect: Dialect, table: Any = None) -> Any:
    """`bind(column, value)`: a value of a column of `table` (default: the outbox) as
    SQLite's driver takes it."""
    columns = (Outbox.__table__ if table is None else table).c

    def bind(name: str, value: Any) -> Any:
        process = columns[name].type.dialect_impl(dialect).bind_processor(dialect)
        return value if process is None else process(value)

    return bind


#: The audit entry of a lapse: actor "system:reminders".
_LAPSE_AUDIT = {
    "actor_type": "system",
    "actor": "reminders",
    "action": "sponsorship.lapsed",
    "record_type": "sponsorship",
}
_LAPSE_DETAILS = {"reason": "three_months_unpaid"}

#: PostgreSQL: the whole lapse in one statement: the update, and the audit entries
#: inserted from its RETURNING (one round trip; 8,640 lapses: about 0.45 s of server
#: time against 0.55-0.8 s for chunked IN lists plus an executemany of audit rows).
_PG_LAPSE_WHERE = """id = ANY($1::int[])
      AND NOT EXISTS (
          SELECT 1 FROM payment
          WHERE payment.sponsorship_id = sponsorship.id
            AND (payment.recorded_at >= $3::timestamptz OR payment.decided_at >= $3::timestamptz)
      )"""
_PG_LAPSE_UPDATE = state.pg_update_sql(
    state.Event.LAPSE, where=_PG_LAPSE_WHERE, now="$2::timestamptz"
)
_PG_LAPSE = f"""
WITH changed AS (
    {_PG_LAPSE_UPDATE}
), audit AS (
    INSERT INTO audit_log (at, actor_type, actor, action, record_type, record_id, opd_id, details)
    SELECT $2::timestamptz, '{_LAPSE_AUDIT["actor_type"]}', '{_LAPSE_AUDIT["actor"]}',
           '{_LAPSE_AUDIT["action"]}', '{_LAPSE_AUDIT["record_type"]}', id::text, opd_id, $4::json
    FROM changed
)
SELECT id FROM changed ORDER BY id
"""


#: SQLite: the lapse of a list of ids (literal ints, `{ids}`), by the primary key. Left to
#: itself, SQLite's planner (no statistics) took the status index for an IN list of 30 ids
#: or more and read every dues-bearing row's entry for each statement: at 1.44 million
#: sponsorships 180-260 ms for 300 lapses against 18 ms by the key, most of a province's
#: run (docs/BENCHMARKS.md 14). NOT INDEXED keeps the indexes out; ids are still looked up
#: by rowid.
_SQLITE_LAPSE = state.pg_update_sql(
    state.Event.LAPSE,
    where="""id IN ({ids})
      AND NOT EXISTS (
          SELECT 1 FROM payment
          WHERE payment.sponsorship_id = sponsorship.id
            AND (payment.recorded_at >= :read_at OR payment.decided_at >= :read_at)
      )""",
    now=":now",
).replace("UPDATE sponsorship SET ", "UPDATE sponsorship NOT INDEXED SET ", 1)


async def mark_lapsed(
    connection: AsyncConnection,
    sponsorship_ids: Sequence[int],
    *,
    now: datetime,
    read_at: datetime,
) -> list[int]:
    """Make these sponsorships LAPSED; returns the ids actually changed, in order.

    Only a sponsorship still dues-bearing changes, and none with a payment
    recorded or decided since `read_at` (when the planner read the payments): a
    payment arriving while the planner computed never ends in a wrong lapse.
    Each change gets an audit entry (actor "system:reminders").
    """
    if not sponsorship_ids:
        return []
    driver = await _asyncpg(connection)
    if driver is not None:
        rows = await driver.fetch(
            _PG_LAPSE, list(sponsorship_ids), now, read_at, json.dumps(_LAPSE_DETAILS)
        )
        return [row[0] for row in rows]
    changed: list[int] = []
    bind = _sqlite_binds(connection.dialect, Sponsorship.__table__)
    for part in chunked(sponsorship_ids):
        result = await connection.exec_driver_sql(
            _SQLITE_LAPSE.format(ids=", ".join(str(int(sid)) for sid in part)),
            {
                "now": bind("status_changed_at", now),
                "read_at": bind("status_changed_at", read_at),
            },
        )
        rows = sorted((int(row[0]), int(row[1])) for row in result.tuples())
        changed.extend(row[0] for row in rows)
        if rows:
            await connection.execute(
                insert(AuditLog),
                [
                    {
                        "at": now,
                        **_LAPSE_AUDIT,
                        "record_id": str(sponsorship_id),
                        "opd_id": opd_id,
                        "details": _LAPSE_DETAILS,
                    }
                    for sponsorship_id, opd_id in rows
                ],
            )
    return sorted(changed)


async def cancel_reminders(
    connection: AsyncConnection, sponsorship_id: int, months: Sequence[date]
) -> int:
    """Delete the still-pending reminders of `months` of one sponsorship; returns how many.

    Call it in the transaction that records a payment for those months: a
    reminder planned before the payment and not yet sent is then never sent
    (the payer's and the worker's). Rows already being sent or sent stay (history).
    """
    keys = [
        reminder_key(kind, sponsorship_id, month)
        for month in months
        for kind in SPONSORSHIP_REMINDER_KINDS + WORKER_REMINDER_KINDS
    ]
    return await delete_pending(connection, keys)


async def delete_pending(connection: AsyncConnection, keys: Iterable[str]) -> int:
    """Delete the still-pending outbox rows with these keys; returns how many went."""
    removed = 0
    for part in chunked(list(keys)):
        result = await connection.execute(
            delete(Outbox).where(
                and_(Outbox.dedupe_key.in_(part), Outbox.status == OutboxStatus.PENDING)
            )
        )
        removed += max(result.rowcount, 0)
    return removed


async def cancel_payroll_lines(connection: AsyncConnection, *, opd_id: int, month: date) -> int:
    """Delete the still-pending payroll reminders of one OPD about `month` (it was marked paid)."""
    result = await connection.execute(
        delete(Outbox).where(
            Outbox.dedupe_key.like(f"reminder:payroll:%:{opd_id}:%:{month_start(month):%Y-%m}"),
            Outbox.status == OutboxStatus.PENDING,
        )
    )
    return max(result.rowcount, 0)
