"""The database side of the collective file and the KPJ import (PRODUCT 4.5).

`collective_rows` streams the enrollments of one submission batch for
`storage.collective_file.write_collective_xlsx` (`export_batch` does both
without stalling an event loop); `preview_import` classifies the rows of a KPJ
file against the OPD's sponsorships without writing anything (the PIC confirms
first; `storage.workbench` applies).

Everything takes the caller's connection and never commits, except
`export_batch`, which opens its own short read-only transactions.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, BinaryIO

from sqlalchemy import LargeBinary, String, any_, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.kpj import KpjProblem, parse_kpj
from domain.vocabulary import SponsorshipStatus
from storage.collective_columns import DEFAULT_COLUMN_MAP, ColumnMap
from storage.collective_file import (
    CollectiveRow,
    KpjRow,
    NikCellProblem,
    erased_row,
    write_collective_csv,
    write_collective_xlsx,
)
from storage.crypto import NikCipher
from storage.db import read_only
from storage.models import SPONSORSHIP_IS_OPEN, Asn, Sponsorship, Worker

_sponsorship = Sponsorship.__table__.c
_worker = Worker.__table__.c
_asn = Asn.__table__.c


#: Values per IN list: well under SQLite's and PostgreSQL's bind-parameter limits.
LOOKUP_CHUNK = 1000
#: KPJs per query when checking who holds them (ix_sponsorship_kpj).
KPJ_CHECK_CHUNK = 5000


_BATCH_ROWS = (
    select(
        _sponsorship.id,
        _worker.nik_ciphertext,
        _worker.full_name,
        _worker.birth_date,
        _worker.sex,
        _worker.phone_e164,
        _worker.village,
        _worker.district,
        _worker.birth_place,
        _worker.street_address,
        _worker.regency,
        _sponsorship.occupation,
        _sponsorship.occupation_text,
        _sponsorship.relationship_to_asn,
        _asn.nip,
        _asn.full_name.label("sponsor_name"),
        _sponsorship.plan,
        _sponsorship.first_month,
        _worker.erased_at,
    )
    .join_from(Sponsorship.__table__, Worker.__table__, _worker.id == _sponsorship.worker_id)
    .join(Asn.__table__, _asn.id == _sponsorship.asn_id)
    .order_by(_sponsorship.id)
)


async def collective_chunk(
    connection: AsyncConnection,
    cipher: NikCipher,
    *,
    batch_id: int,
    after_id: int = 0,
    limit: int = 2000,
) -> tuple[list[CollectiveRow], int | None]:
    """Up to `limit` rows of batch `batch_id` with sponsorship id above `after_id`.

    Returns the rows and the `after_id` for the next chunk (None after the last).
    A worker erased since the batch went out is an `erased_row` (nothing of
    theirs is left to decrypt, and nothing of theirs is written).
    """
    result = await connection.execute(
        _BATCH_ROWS.where(_sponsorship.batch_id == batch_id, _sponsorship.id > after_id).limit(
            limit
        )
    )
    records = result.all()
    rows = [
        erased_row(
            occupation=record.occupation,
            sponsor_nip=record.nip,
            sponsor_name=record.sponsor_name,
            plan=record.plan,
            first_month=record.first_month,
            relationship=record.relationship_to_asn,
        )
        if record.erased_at is not None
        else CollectiveRow(
            nik=cipher.decrypt(record.nik_ciphertext),
            full_name=record.full_name,
            birth_date=record.birth_date,
            sex=record.sex,
            phone_e164=record.phone_e164,
            village=record.village,
            district=record.district,
            occupation=record.occupation,
            sponsor_nip=record.nip,
            sponsor_name=record.sponsor_name,
            plan=record.plan,
            first_month=record.first_month,
            birth_place=record.birth_place,
            street_address=record.street_address,
            regency=record.regency,
            relationship=record.relationship_to_asn,
            occupation_text=record.occupation_text,
        )
        for record in records
    ]
    return rows, (records[-1].id if len(records) == limit else None)


async def erased_row_count(connection: AsyncConnection, *, batch_id: int) -> int:
    """How many enrollments of batch `batch_id` belong to workers erased since (for the note)."""
    result = await connection.execute(
        select(func.count())
        .select_from(Sponsorship.__table__)
        .join(Worker.__table__, _worker.id == _sponsorship.worker_id)
        .where(_sponsorship.batch_id == batch_id, _worker.erased_at.is_not(None))
    )
    return int(result.scalar_one())


async def collective_rows(
    connection: AsyncConnection, cipher: NikCipher, *, batch_id: int, chunk_size: int = 2000
) -> AsyncIterator[CollectiveRow]:
    """The enrollments of submission batch `batch_id`, ordered by sponsorship id.

    Read in chunks of `chunk_size` (keyset pagination on the sponsorship id),
    so memory stays flat for any batch size; NIKs are decrypted chunk by chunk.
    All in the caller's transaction: on SQLite that holds the write lock for as
    long as the caller takes to consume the rows (see `export_batch`).
    """
    after: int | None = 0
    while after is not None:
        rows, after = await collective_chunk(
            connection, cipher, batch_id=batch_id, after_id=after, limit=chunk_size
        )
        for row in rows:
            yield row


async def export_batch(
    database: AsyncEngine,
    cipher: NikCipher,
    target: BinaryIO,
    *,
    batch_id: int,
    batch_number: str,
    opd_name: str,
    created_at: datetime,
    chunk_size: int = 2000,
    progress: Callable[[int], object] | None = None,
    columns: ColumnMap = DEFAULT_COLUMN_MAP,
    as_csv: bool = False,
) -> int:
    """Write the collective file of batch `batch_id` to `target`; returns the rows written.

    For a caller on a running event loop (the bot, the CLI): the file is
    written in a worker thread (~2.7 s for 144,000 rows, which would stall
    every chat), while the rows are read on the loop one chunk per short
    transaction, the next chunk read while the current one is written. The
    thread costs nothing measurable and gains a little: 144,000 rows took
    4.3-4.7 s this way and 5.0 s written on the loop chunk by chunk (zlib
    compresses without holding the GIL, overlapping the reading). Each chunk
    is read in its own `storage.db.read_only` transaction (SQLite: a deferred
    BEGIN, no write lock), so neither a long read nor an export in another
    process holds up the bot's writes. Commits nothing. `progress` is called with the
    number of rows handed to the writer, per chunk. Rows of workers erased
    since the batch went out are written as erased (`erased_row`), and the
    file says how many above the headers. `columns`: the province's column
    map; `as_csv`: the CSV form (`write_collective_csv`) instead of the XLSX.
    """
    loop = asyncio.get_running_loop()
    # Read-only transactions (SQLite: no write lock), so an export in another process
    # (`sertakan export`) never holds up the bot's writes for a chunk.
    async with read_only(database) as connection:
        erased = await erased_row_count(connection, batch_id=batch_id)

    async def read(after_id: int) -> tuple[list[CollectiveRow], int | None]:
        async with read_only(database) as connection:
            return await collective_chunk(
                connection, cipher, batch_id=batch_id, after_id=after_id, limit=chunk_size
            )

    def rows() -> Iterator[CollectiveRow]:
        pending = asyncio.run_coroutine_threadsafe(read(0), loop)
        while True:
            chunk, after = pending.result()
            if after is not None:
                pending = asyncio.run_coroutine_threadsafe(read(after), loop)
            yield from chunk
            if progress is not None:
                progress(len(chunk))
            if after is None:
                return

    if as_csv:
        return await asyncio.to_thread(write_collective_csv, rows(), target, columns=columns)
    return await asyncio.to_thread(
        write_collective_xlsx,
        rows(),
        target,
        batch_number=batch_number,
        opd_name=opd_name,
        created_at=created_at,
        erased_rows=erased,
        columns=columns,
    )


class RejectReason(StrEnum):
    """Why a row of a KPJ file is not applied."""

    #: The NIK cell is empty, not digits, or not 16 digits long.
    MALFORMED_NIK = "malformed_nik"
    #: The NIK was stored as a number (scientific notation): its digits are lost.
    NIK_AS_NUMBER = "nik_as_number"
    #: No open sponsorship for this NIK anywhere.
    UNKNOWN_NIK = "unknown_nik"
    #: The NIK appears more than once in the file.
    DUPLICATE_NIK = "duplicate_nik"
    MALFORMED_KPJ = "malformed_kpj"
    #: The KPJ is given for two different NIKs, or already belongs to another worker.
    DUPLICATE_KPJ = "duplicate_kpj"
    #: The worker's open sponsorship is handled by another OPD (which one is not told).
    OTHER_OPD = "other_opd"
    #: The enrollment is still waiting for the PIC or returned to the ASN.
    NOT_SUBMITTED = "not_submitted"
    #: The sponsorship already has a different KPJ.
    KPJ_CONFLICT = "kpj_conflict"


@dataclasses.dataclass(frozen=True, slots=True)
class RejectedRow:
    row_number: int
    #: Masked NIK (or the cell's text, long digit runs masked): safe to show and store.
    nik_shown: str
    reason: RejectReason


@dataclasses.dataclass(frozen=True, slots=True)
class ImportPreview:
    """What applying a KPJ file would do; `total_rows` = matched + unchanged + rejected."""

    #: Data rows read (completely empty rows not included).
    total_rows: int
    empty_rows: int
    #: (sponsorship id, KPJ) to write on confirmation, in file order.
    matched: list[tuple[int, str]]
    #: Rows whose sponsorship already has exactly this KPJ (a file sent again).
    unchanged: int
    #: In file order.
    rejected: list[RejectedRow]

    def counts(self) -> dict[RejectReason, int]:
        """Rejected rows per reason, in declaration order; reasons without rows left out."""
        counter = Counter(row.reason for row in self.rejected)
        return {reason: counter[reason] for reason in RejectReason if counter[reason]}


@dataclasses.dataclass(slots=True, frozen=True)
class _OpenSponsorship:
    id: int
    worker_id: int
    opd_id: int
    status: SponsorshipStatus
    kpj: str | None


#: Statuses whose sponsorship can receive a KPJ from BPJS.
_AWAITING_KPJ = frozenset({SponsorshipStatus.ACCEPTED, SponsorshipStatus.SUBMITTED})


async def preview_import(
    connection: AsyncConnection,
    cipher: NikCipher,
    *,
    opd_id: int,
    rows: Sequence[KpjRow],
    empty_rows: int = 0,
    progress: Callable[[int], object] | None = None,
) -> ImportPreview:
    """Classify every row of a KPJ file for OPD `opd_id`; reads only.

    Per row, the first rule that applies:

    1. the NIK cell is a number in scientific notation -> NIK_AS_NUMBER; any
       other unreadable NIK -> MALFORMED_NIK; the KPJ does not parse -> MALFORMED_KPJ;
    2. the same NIK on several (otherwise readable) rows: with the same KPJ
       every time, the first row counts and the others are DUPLICATE_NIK; with
       different KPJs all of them are DUPLICATE_NIK, since nothing tells which
       KPJ is right;
    3. the same KPJ for different NIKs -> all those rows DUPLICATE_KPJ;
    4. no open sponsorship for the NIK -> UNKNOWN_NIK; one handled by another
       OPD -> OTHER_OPD;
    5. the sponsorship already has this KPJ -> unchanged; another KPJ ->
       KPJ_CONFLICT; no KPJ yet and accepted or submitted -> matched, unless
       the KPJ belongs to another worker's sponsorship (DUPLICATE_KPJ);
       otherwise (waiting for the PIC, returned) -> NOT_SUBMITTED.

    NIKs are looked up by their keyed hash in chunks of `LOOKUP_CHUNK`;
    `progress` is called with the number of rows looked up, per chunk.
    `empty_rows` (from `read_kpj_file`) is carried into the preview.
    """
    reasons: list[RejectReason | None] = [None] * len(rows)
    kpjs: list[str] = [""] * len(rows)
    for index, row in enumerate(rows):
        if row.nik_problem is NikCellProblem.SCIENTIFIC:
            reasons[index] = RejectReason.NIK_AS_NUMBER
        elif row.nik_problem is not None or row.nik is None:
            reasons[index] = RejectReason.MALFORMED_NIK
        else:
            kpj = parse_kpj(row.kpj_raw)
            if isinstance(kpj, KpjProblem):
                reasons[index] = RejectReason.MALFORMED_KPJ
            else:
                kpjs[index] = kpj

    _mark_repeated_niks(rows, kpjs, reasons)
    _mark_shared_kpjs(rows, kpjs, reasons)

    alive = [index for index, reason in enumerate(reasons) if reason is None]
    hashes = {index: cipher.lookup_hash(_nik(rows[index])) for index in alive}
    found = await _open_sponsorships(connection, list(hashes.values()), progress)

    candidates: list[tuple[int, _OpenSponsorship]] = []
    unchanged = 0
    for index in alive:
        sponsorship = found.get(hashes[index])
        if sponsorship is None:
            reasons[index] = RejectReason.UNKNOWN_NIK
        elif sponsorship.opd_id != opd_id:
            reasons[index] = RejectReason.OTHER_OPD
        elif sponsorship.kpj is not None:
            if sponsorship.kpj == kpjs[index]:
                unchanged += 1
            else:
                reasons[index] = RejectReason.KPJ_CONFLICT
        elif sponsorship.status in _AWAITING_KPJ:
            candidates.append((index, sponsorship))
        else:
            reasons[index] = RejectReason.NOT_SUBMITTED

    holders = await _kpj_holders(connection, [kpjs[index] for index, _ in candidates])
    matched: list[tuple[int, str]] = []
    for index, sponsorship in candidates:
        if holders.get(kpjs[index], set()) - {sponsorship.worker_id}:
            reasons[index] = RejectReason.DUPLICATE_KPJ
        else:
            matched.append((sponsorship.id, kpjs[index]))

    rejected = [
        RejectedRow(row.row_number, row.nik_shown, reason)
        for row, reason in zip(rows, reasons, strict=True)
        if reason is not None
    ]
    return ImportPreview(
        total_rows=len(rows),
        empty_rows=empty_rows,
        matched=matched,
        unchanged=unchanged,
        rejected=rejected,
    )


def _nik(row: KpjRow) -> str:
    assert row.nik is not None  # rows without a NIK are rejected before any lookup
    return row.nik


def _mark_repeated_niks(
    rows: Sequence[KpjRow], kpjs: list[str], reasons: list[RejectReason | None]
) -> None:
    by_nik: dict[str, list[int]] = defaultdict(list)
    for index, reason in enumerate(reasons):
        if reason is None:
            by_nik[_nik(rows[index])].append(index)
    for indexes in by_nik.values():
        if len(indexes) < 2:
            continue
        agree = len({kpjs[index] for index in indexes}) == 1
        for index in indexes[1:] if agree else indexes:
            reasons[index] = RejectReason.DUPLICATE_NIK


def _mark_shared_kpjs(
    rows: Sequence[KpjRow], kpjs: list[str], reasons: list[RejectReason | None]
) -> None:
    by_kpj: dict[str, list[int]] = defaultdict(list)
    for index, reason in enumerate(reasons):
        if reason is None:
            by_kpj[kpjs[index]].append(index)
    for indexes in by_kpj.values():
        # Repeated NIKs are already down to one row each: two rows here are two NIKs.
        if len(indexes) > 1:
            for index in indexes:
                reasons[index] = RejectReason.DUPLICATE_KPJ


def _member_of(
    connection: AsyncConnection, column: Any, values: Sequence[Any], element_type: Any
) -> Any:
    """`column IN (values)`; on PostgreSQL `column = ANY(<one array parameter>)`.

    PostgreSQL plans an IN list of 1,000 parameters anew for every chunk: the
    lookups of a 144,000-row file took 5-7.5 s that way and 1.1 s with one
    array parameter.
    """
    if connection.dialect.name == "postgresql":
        return column == any_(literal(list(values), ARRAY(element_type)))
    return column.in_(values)


def _chunks(values: Sequence[Any], size: int | None = None) -> list[Sequence[Any]]:
    size = size or LOOKUP_CHUNK
    return [values[start : start + size] for start in range(0, len(values), size)]


async def _open_sponsorships(
    connection: AsyncConnection,
    hashes: Sequence[bytes],
    progress: Callable[[int], object] | None,
) -> dict[bytes, _OpenSponsorship]:
    """The open sponsorship of each worker found by NIK hash (at most one per worker)."""
    statement = (
        select(
            _worker.nik_hash,
            _sponsorship.id,
            _sponsorship.worker_id,
            _sponsorship.opd_id,
            _sponsorship.status,
            _sponsorship.kpj,
        )
        .join_from(Worker.__table__, Sponsorship.__table__, _sponsorship.worker_id == _worker.id)
        .where(SPONSORSHIP_IS_OPEN)  # the partial index's own predicate
    )
    found: dict[bytes, _OpenSponsorship] = {}
    for chunk in _chunks(hashes):
        result = await connection.execute(
            statement.where(_member_of(connection, _worker.nik_hash, chunk, LargeBinary))
        )
        for row in result:
            found[row.nik_hash] = _OpenSponsorship(
                row.id, row.worker_id, row.opd_id, row.status, row.kpj
            )
        if progress is not None:
            progress(len(chunk))
    return found


async def _kpj_holders(connection: AsyncConnection, kpjs: Sequence[str]) -> dict[str, set[int]]:
    """For each KPJ already in the database: the workers whose sponsorships carry it."""
    statement = select(_sponsorship.kpj, _sponsorship.worker_id)
    holders: dict[str, set[int]] = defaultdict(set)
    for chunk in _chunks(kpjs, KPJ_CHECK_CHUNK):
        result = await connection.execute(
            statement.where(_member_of(connection, _sponsorship.kpj, chunk, String))
        )
        for row in result:
            holders[row.kpj].add(row.worker_id)
    return holders
