"""One province for the benches: OPDs, PICs, chat accounts, ASN, workers, sponsorships, payments.

`bench_reminders`, `bench_coverage` and `bench_web_queue` (and the planner's
tests) seed their rows here. A bench describes its province (`Province`: the
OPDs, its sponsorship rows and payments, how ASN spread over OPDs, which OPDs
have a PIC, extra worker columns) and `seed_province` writes it; the accounts,
ASN and workers follow from the sponsorships (three per ASN, worker id =
sponsorship id). `dues_mix` gives the reminder bench's sponsorships and
payments (plans and arrears mixed as of Wednesday 11 November 2026), which
the coverage bench reuses. `replicate` copies a seeded province in SQL
(1.44 million sponsorships from 144,000: seconds, not the minutes of writing
them from Python).

Fast: rows go in by `insert_rows`, in bounded batches without SQLAlchemy's
per-row parameter handling: on PostgreSQL by binary COPY on the asyncpg
connection, on SQLite by one sqlite3 executemany per batch inside one
transaction; each value is converted by its column's own bind processor,
so what lands is what `insert(table)` would have written.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.months import add_months
from domain.tariff import FundingSource
from domain.vocabulary import (
    Channel,
    EmploymentType,
    Language,
    Occupation,
    PaymentPlan,
    PaymentStatus,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from storage.db import create_engine, is_sqlite
from storage.migrate import upgrade_to_head
from storage.models import Asn, ChannelAccount, Opd, Payment, Pic, Sponsorship, Worker
from storage.sqlite_inline import InlineConnection

JAKARTA = ZoneInfo("Asia/Jakarta")
#: The planning day of the dues mix: Wednesday 11 November 2026, 09:00 WIB.
NOW = datetime(2026, 11, 11, 9, 0, tzinfo=JAKARTA).astimezone(UTC)
PER_ASN = 3
#: Rows per COPY / executemany batch (bounded memory whatever the table's size).
BATCH = 5000

#: (share in percent, months paid through relative to November 2026: -1 = October).
ARREARS_MIX = ((50, -1), (20, 0), (14, -2), (8, -3), (4, -4), (2, -6))

Row = dict[str, Any]


def _numbered_opds(count: int) -> list[tuple[str, str]]:
    return [(f"OPD-{opd}", f"Dinas {opd}") for opd in range(1, count + 1)]


@dataclasses.dataclass(slots=True)
class Province:
    """What a bench seeds. Ids are explicit and start at 1 in every table.

    `sponsorships`: the rows (with "id", "worker_id" = id, "asn_id", "opd_id");
    one worker per sponsorship and `ceil(n / per_asn)` sponsoring ASN are made
    for them, then `idle_asn` ASN who sponsor nobody. The chat accounts are the
    ASN's (account id = ASN id), then one per PIC (`pic_opds`, in order).
    """

    sponsorships: list[Row]
    payments: Iterable[Row] = ()
    opds: Sequence[tuple[str, str]] = dataclasses.field(default_factory=lambda: _numbered_opds(50))
    now: datetime = NOW
    per_asn: int = PER_ASN
    idle_asn: int = 0
    #: OPD ids that get a PIC each.
    pic_opds: Sequence[int] = ()
    #: ASN id -> its OPD id (default: `1 + asn % len(opds)`).
    asn_opd: Callable[[int], int] | None = None
    #: Account id -> language (default: Indonesian).
    language: Callable[[int], Language] = lambda _account: Language.INDONESIAN
    #: Worker columns beyond (or instead of) the default ones, by worker id.
    worker_extra: Callable[[int], Row] = lambda _worker: {}

    @property
    def asn_count(self) -> int:
        return (len(self.sponsorships) + self.per_asn - 1) // self.per_asn + self.idle_asn


async def empty_database(url: str) -> None:
    """A database at the head migration and empty (PostgreSQL: its public schema is
    DROPPED first, so give a dedicated database; SQLite: a new file)."""
    if not is_sqlite(url):
        engine = create_engine(url)
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            await connection.exec_driver_sql("CREATE SCHEMA public")
        await engine.dispose()
    await upgrade_to_head(url)


async def seed_province(engine: AsyncEngine, province: Province) -> dict[str, int]:
    """Write `province`; returns how many sponsorships, payments and ASN were written."""
    now = province.now
    opds = province.opds
    asn_count = province.asn_count
    asn_opd = province.asn_opd or (lambda asn: 1 + asn % len(opds))
    written: dict[str, int] = {}
    async with engine.begin() as connection:
        await insert_rows(
            connection,
            Opd,
            (
                {
                    "id": number,
                    "code": code,
                    "name": name,
                    "search_name": name.lower(),
                    "active": True,
                    "created_at": now,
                }
                for number, (code, name) in enumerate(opds, start=1)
            ),
        )
        accounts = asn_count + len(province.pic_opds)
        await insert_rows(
            connection,
            ChannelAccount,
            (
                {
                    "id": account,
                    "channel": Channel.TELEGRAM,
                    "external_id": str(100_000 + account),
                    "language": province.language(account),
                    "display_name": None,
                    "created_at": now,
                }
                for account in range(1, accounts + 1)
            ),
        )
        await insert_rows(
            connection,
            Pic,
            (
                {
                    "id": number,
                    "opd_id": opd_id,
                    "channel_account_id": asn_count + number,
                    "appointed_by": "bench",
                    "appointed_at": now,
                }
                for number, opd_id in enumerate(province.pic_opds, start=1)
            ),
        )
        await insert_rows(
            connection,
            Asn,
            (
                {
                    "id": asn,
                    "nip": f"{asn:018d}",
                    "employment_type": EmploymentType.PNS,
                    "full_name": f"ASN {asn}",
                    "birth_date": date(1980, 1, 1),
                    "sex": Sex.MALE,
                    "opd_id": asn_opd(asn),
                    "phone_e164": f"+628{asn:09d}",
                    "channel_account_id": asn,
                    "registered_at": now,
                }
                for asn in range(1, asn_count + 1)
            ),
        )
        await insert_rows(
            connection,
            Worker,
            (
                {
                    "id": worker,
                    "nik_hash": worker.to_bytes(32, "big"),
                    "nik_ciphertext": b"x",
                    "nik_masked": "3201********0001",
                    "full_name": f"Pekerja {worker}",
                    "birth_date": date(1985, 1, 1),
                    "sex": Sex.FEMALE,
                    "phone_e164": None,
                    "village": "Desa",
                    "district": "Kecamatan",
                    "created_at": now,
                    "updated_at": now,
                    **province.worker_extra(worker),
                }
                for worker in range(1, len(province.sponsorships) + 1)
            ),
        )
        written["sponsorships"] = await insert_rows(connection, Sponsorship, province.sponsorships)
        written["payments"] = await insert_rows(connection, Payment, province.payments)
    written["asn"] = asn_count
    await sync_sequences(engine)
    return written


async def insert_rows(connection: AsyncConnection, table: Any, rows: Iterable[Row]) -> int:
    """Insert `rows` (dicts with the same keys: the first row's) into `table`'s mapped table,
    in batches of `BATCH`; returns how many. The caller owns the transaction."""
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return 0
    names = list(first)
    columns = table.__table__.c
    dialect = connection.dialect
    processors = [
        _remembered(columns[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in names
    ]

    def values(batch: list[Row]) -> list[tuple[Any, ...]]:
        # Column by column (one map each), then zipped into rows.
        by_column = [
            [row.get(name) for row in batch]
            if process is None
            else list(map(process, (row.get(name) for row in batch)))
            for name, process in zip(names, processors, strict=True)
        ]
        return list(zip(*by_column, strict=True))

    driver: Any = (await connection.get_raw_connection()).driver_connection
    count = 0
    every = itertools.chain((first,), iterator)
    if dialect.driver == "asyncpg":
        if not driver.is_in_transaction():
            await connection.exec_driver_sql("SELECT 1")  # the caller's transaction begins
        while batch := list(itertools.islice(every, BATCH)):
            await driver.copy_records_to_table(
                table.__tablename__, columns=names, records=values(batch)
            )
            count += len(batch)
        return count
    sql = (
        f"INSERT INTO {table.__tablename__} ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    )
    while batch := list(itertools.islice(every, BATCH)):
        if isinstance(driver, InlineConnection):
            driver.sqlite3_connection.executemany(sql, values(batch))
        else:  # pragma: no cover - the engines of storage.db are inline on SQLite
            await connection.exec_driver_sql(sql, values(batch))
        count += len(batch)
    return count


def _remembered(process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """`process` remembering its results for up to 10,000 values: a seed repeats the same
    dates, times and enum members hundreds of thousands of times."""
    if process is None:
        return None
    memo: dict[Any, Any] = {}

    def run(value: Any) -> Any:
        try:
            return memo[value]
        except KeyError:
            result = process(value)
            if len(memo) < 10_000:
                memo[value] = result
            return result
        except TypeError:  # unhashable (a JSON value)
            return process(value)

    return run


async def sync_sequences(engine: AsyncEngine) -> None:
    """PostgreSQL: each id sequence past the highest id (the seed writes explicit ids)."""
    if is_sqlite(str(engine.url)):
        return
    async with engine.begin() as connection:
        for table in (Opd, ChannelAccount, Pic, Asn, Worker, Sponsorship, Payment):
            name = table.__tablename__
            await connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {name}), false)"
            )


def plan_of(index: int) -> PaymentPlan:
    """The dues mix's plan of sponsorship `index` (id - 1): 60% monthly, 25% quarterly,
    15% payroll deduction."""
    slot = index % 20
    if slot < 12:
        return PaymentPlan.MONTHLY
    if slot < 17:
        return PaymentPlan.QUARTERLY
    return PaymentPlan.PAYROLL_DEDUCTION


def paid_through(index: int) -> int | None:
    """Offset from November 2026 of the last paid month; None: not dues-bearing."""
    slot = (index * 7919) % 100
    for share, offset in ARREARS_MIX:
        if slot < share:
            return offset
        slot -= share
    return None


def seeded_status(index: int) -> SponsorshipStatus:
    """The status a sponsorship is seeded with (index = id - 1); None-paid ones are SUBMITTED."""
    if paid_through(index) is None:
        return SponsorshipStatus.SUBMITTED
    return SponsorshipStatus.ACTIVE if index % 3 else SponsorshipStatus.CARD_HANDED_OVER


def dues_sponsorships(sponsorships: int, *, opds: int = 50) -> list[Row]:
    """The dues mix's sponsorship rows (the same on every call)."""
    november = date(2026, 11, 1)
    rows: list[Row] = []
    for index in range(sponsorships):
        plan = plan_of(index)
        through = paid_through(index)
        first_month = add_months(
            november, -1 - index % 12 + min(-12 if through is None else through, 0)
        )
        asn = 1 + index // PER_ASN
        rows.append(
            {
                "id": index + 1,
                "worker_id": index + 1,
                "asn_id": asn,
                "opd_id": 1 + asn % opds,
                "occupation": Occupation.DRIVER,
                "plan": plan,
                "first_month": first_month,
                "status": seeded_status(index),
                "worker_consent": WorkerConsent.GIVEN,
                "funding_source": (
                    FundingSource.PAYROLL_DEDUCTION
                    if plan is PaymentPlan.PAYROLL_DEDUCTION
                    else FundingSource.ASN_PERSONAL
                ),
                "created_at": NOW,
                "status_changed_at": NOW,
            }
        )
    return rows


def dues_payments(sponsorships: int) -> Iterator[Row]:
    """The dues mix's payments, one row per month (quarterly: per quarter) up to each
    sponsorship's paid-through month, as the chat records them (a generator: about six
    per sponsorship)."""
    november = date(2026, 11, 1)
    decided = NOW.replace(year=2025)
    for index in range(sponsorships):
        through = paid_through(index)
        if through is None:
            continue
        plan = plan_of(index)
        month = add_months(november, -1 - index % 12 + min(through, 0))
        last = add_months(november, through)
        step = plan.months_per_payment
        while month <= last:
            months = min(step, (last.year - month.year) * 12 + last.month - month.month + 1)
            yield {
                "sponsorship_id": index + 1,
                "first_month": month,
                "months": months,
                "amount": 16_800 * months,
                "status": PaymentStatus.CONFIRMED,
                "recorded_at": decided,
                "decided_at": decided,
                "payroll": plan is PaymentPlan.PAYROLL_DEDUCTION,
            }
            month = add_months(month, months)


async def replicate(engine: AsyncEngine, province: Province, copies: int) -> None:
    """Copy the seeded ASN, accounts, workers, sponsorships and payments `copies` times in SQL.

    A big province fast (1.44 million sponsorships from 144,000): each copy is
    one INSERT ... SELECT per table with the ids shifted and the unique values
    (NIP, account id, NIK hash) made new, in the database. The PICs and their
    accounts are not copied (an OPD's PIC stays one); the sponsorships' status
    mix repeats when the shift is a multiple of 3 (`dues_sponsorships`).
    """
    sqlite = is_sqlite(str(engine.url))
    sponsorships = len(province.sponsorships)
    asn_count = province.asn_count
    accounts = asn_count + len(province.pic_opds)
    async with engine.connect() as connection:
        payments = int(await connection.scalar(select(func.max(Payment.id))) or 0)

    def padded(expression: str, width: int) -> str:
        if sqlite:
            return f"printf('%0{width}d', {expression})"
        return f"lpad(({expression})::text, {width}, '0')"

    for copy in range(1, copies):
        shift = {
            "account": copy * accounts,
            "asn": copy * asn_count,
            "worker": copy * sponsorships,
            "payment": copy * payments,
        }
        overrides: dict[Any, dict[str, str]] = {
            ChannelAccount: {
                "id": f"id + {shift['account']}",
                "external_id": f"CAST(100000 + id + {shift['account']} AS TEXT)"
                if sqlite
                else f"(100000 + id + {shift['account']})::text",
            },
            Asn: {
                "id": f"id + {shift['asn']}",
                "nip": padded(f"id + {shift['asn']}", 18),
                "phone_e164": "'+628' || " + padded(f"id + {shift['asn']}", 9),
                "channel_account_id": f"channel_account_id + {shift['account']}",
            },
            Worker: {
                "id": f"id + {shift['worker']}",
                "nik_hash": "randomblob(32)"
                if sqlite
                else f"sha256(int8send((id + {shift['worker']})::bigint))",
            },
            Sponsorship: {
                "id": f"id + {shift['worker']}",
                "worker_id": f"worker_id + {shift['worker']}",
                "asn_id": f"asn_id + {shift['asn']}",
            },
            Payment: {
                "id": f"id + {shift['payment']}",
                "sponsorship_id": f"sponsorship_id + {shift['worker']}",
            },
        }
        limits = {
            ChannelAccount: f"id <= {asn_count}",
            Asn: f"id <= {asn_count}",
            Worker: f"id <= {sponsorships}",
            Sponsorship: f"id <= {sponsorships}",
            Payment: f"id <= {payments}",
        }
        async with engine.begin() as connection:
            for model, columns in overrides.items():
                table = model.__table__
                names = [column.name for column in table.columns]
                values = ", ".join(columns.get(name, name) for name in names)
                await connection.exec_driver_sql(
                    f"INSERT INTO {table.name} ({', '.join(names)}) "
                    f"SELECT {values} FROM {table.name} WHERE {limits[model]}"
                )
    await sync_sequences(engine)
