"""Benchmark: the collective XLSX export and the KPJ import preview at province scale.

A fresh database (SQLite in a temporary file by default) is seeded, untimed,
with one OPD, ASNs (five workers each), N workers with encrypted NIKs and N
submitted sponsorships in one batch. Then, `--repeat` times each:

(a) export: `storage.collective.export_batch`, the path the CLI and the chat
    use: rows read from the database in chunks (one short transaction each),
    NIKs decrypted, the XLSX streamed by `storage.xlsx_stream` into a
    temporary file. Wall time, and resident-memory growth: the
    peak VmRSS sampled every 5 ms during the export minus VmRSS just before.
    For the analysis the two halves are also timed alone: reading the batch
    (`collective_rows`, nothing written) and writing the same rows from memory
    (`write_collective_xlsx` only). Baseline, measured in the same run: the
    same rows written from memory as a plain CSV file with the csv module
    (the cheapest serialisation of the same data); the export time is also
    shown as a ratio to it.
(b) import preview: an N-row KPJ file (NIK, name, KPJ; as XLSX and as CSV)
    generated from the same NIKs, then `read_kpj_file_isolated` (the reader in
    a child process with limits, as the chat and the CLI read) + `preview_import`,
    wall time of both together (and each alone).

Correctness guards (a failed guard is a broken run, exit 1): the export wrote
N rows and its first rows hold the seeded NIKs; the preview matched all N rows.

    python -m bench.bench_files [--rows N] [--repeat R] [--database-url URL]

Targets (issue): export of 144,000 enrollments <= 10 s with <= 50 MB resident
memory growth; preview of a 144,000-row KPJ file <= 10 s. Exit code 0 for any
measurement (MISS is a result, not an error).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import io
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.nik import mask_nik
from domain.tariff import LOWEST_INCOME_BRACKET
from domain.vocabulary import (
    BatchStatus,
    Channel,
    EmploymentType,
    Language,
    Occupation,
    PaymentPlan,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from storage.collective import collective_rows, export_batch, preview_import
from storage.collective_file import (
    COLLECTIVE_HEADERS,
    HEADER_ROW,
    PLAN_WORDS,
    RELATIONSHIP_WORDS,
    SEX_WORDS,
    CollectiveRow,
    occupation_word,
    read_kpj_file,
    write_collective_xlsx,
)
from storage.crypto import NikCipher
from storage.db import create_engine, is_sqlite
from storage.isolated_read import read_kpj_file_isolated
from storage.migrate import upgrade_to_head
from storage.models import Asn, ChannelAccount, Opd, Sponsorship, SubmissionBatch, Worker

TARGET_EXPORT_S = 10.0
TARGET_EXPORT_MB = 50.0
TARGET_PREVIEW_S = 10.0
WORKERS_PER_ASN = 5
INSERT_CHUNK = 10_000
NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
BATCH_NUMBER = "BENCH-2026-001"
OPD_NAME = "Dinas Benchmark Provinsi"
KEY = bytes(range(32))
OCCUPATIONS = list(Occupation)
PLANS = list(PaymentPlan)


class BenchBroken(RuntimeError):
    """The run did not do what it measures; no figures are reported."""


def nik_for(index: int) -> str:
    """A distinct, well-formed NIK for index < 989,901: a woman born 1980-1999."""
    serial = 1 + index % 9999
    district = 1 + (index // 9999) % 99
    day = 1 + index % 28 + 40
    month = 1 + index % 12
    year = 80 + index % 20
    return f"3201{district:02d}{day:02d}{month:02d}{year:02d}{serial:04d}"


def kpj_for(index: int) -> str:
    return f"2{index:010d}"


# --- memory -------------------------------------------------------------------------------


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise BenchBroken(f"{field_name} not in /proc/self/status (Linux only)")


class RssSampler:
    """The peak VmRSS of this process while the block runs, sampled every 5 ms."""

    def __init__(self) -> None:
        self.before_kb = 0
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_kb = max(self.peak_kb, _status_kb("VmRSS"))

    def __enter__(self) -> RssSampler:
        gc.collect()
        self.before_kb = self.peak_kb = _status_kb("VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _status_kb("VmRSS"))

    @property
    def growth_mb(self) -> float:
        return (self.peak_kb - self.before_kb) / 1024


# --- seeding ------------------------------------------------------------------------------


async def _insert_chunked(
    database: AsyncEngine, table: Any, rows: Callable[[int, int], list[dict[str, Any]]], n: int
) -> None:
    for start in range(0, n, INSERT_CHUNK):
        async with database.begin() as connection:
            await connection.execute(insert(table), rows(start, min(n, start + INSERT_CHUNK)))


async def seed(database: AsyncEngine, cipher: NikCipher, rows: int) -> tuple[int, int]:
    """One OPD, rows/5 ASNs, `rows` workers and submitted sponsorships in one batch.

    Returns (OPD id, batch id).
    """
    async with database.begin() as connection:
        opd = await connection.execute(
            insert(Opd).values(
                code="BENCH",
                name=OPD_NAME,
                search_name=OPD_NAME.lower(),
                active=True,
                created_at=NOW,
            )
        )
        opd_id = int(opd.inserted_primary_key[0])  # type: ignore[index]
        batch = await connection.execute(
            insert(SubmissionBatch).values(
                opd_id=opd_id,
                number=BATCH_NUMBER,
                status=BatchStatus.SUBMITTED,
                row_count=rows,
                created_at=NOW,
                created_by="admin:bench",
                submitted_at=NOW,
            )
        )
        batch_id = int(batch.inserted_primary_key[0])  # type: ignore[index]
    asns = (rows + WORKERS_PER_ASN - 1) // WORKERS_PER_ASN
    await _insert_chunked(
        database,
        ChannelAccount.__table__,
        lambda a, b: [
            {
                "id": i + 1,
                "channel": Channel.TELEGRAM,
                "external_id": str(600_000_000 + i),
                "language": Language.INDONESIAN,
                "display_name": None,
                "created_at": NOW,
            }
            for i in range(a, b)
        ],
        asns,
    )
    await _insert_chunked(
        database,
        Asn.__table__,
        lambda a, b: [
            {
                "id": i + 1,
                "nip": f"19850312{i:010d}",
                "employment_type": EmploymentType.PNS,
                "full_name": f"ASN Penanggung {i}",
                "birth_date": date(1985, 3, 12),
                "sex": Sex.MALE,
                "opd_id": opd_id,
                "phone_e164": f"+62812{i:08d}",
                "channel_account_id": i + 1,
                "registered_at": NOW,
            }
            for i in range(a, b)
        ],
        asns,
    )
    await _insert_chunked(
        database,
        Worker.__table__,
        lambda a, b: [
            {
                "id": i + 1,
                "nik_hash": cipher.lookup_hash(nik_for(i)),
                "nik_ciphertext": cipher.encrypt(nik_for(i)),
                "nik_masked": mask_nik(nik_for(i)),
                "full_name": f"Pekerja Rentan Nomor {i}",
                "birth_date": date(1980 + i % 20, 1 + i % 12, 1 + i % 28),
                "sex": Sex.FEMALE,
                "phone_e164": f"+62813{i:08d}" if i % 3 else None,
                "birth_place": f"Kota {i % 10}",
                "street_address": f"Jl. Merdeka No. {i % 200} RT {i % 9:02d}/RW {i % 7:02d}",
                "village": f"Desa {i % 1447}",
                "district": f"Kecamatan {i % 129}",
                "regency": f"Kabupaten {i % 10}",
                "created_at": NOW,
                "updated_at": NOW,
            }
            for i in range(a, b)
        ],
        rows,
    )
    await _insert_chunked(
        database,
        Sponsorship.__table__,
        lambda a, b: [
            {
                "id": i + 1,
                "worker_id": i + 1,
                "asn_id": i // WORKERS_PER_ASN + 1,
                "opd_id": opd_id,
                "occupation": OCCUPATIONS[i % len(OCCUPATIONS)],
                "plan": PLANS[i % len(PLANS)],
                "first_month": date(2026, 12, 1),
                "status": SponsorshipStatus.SUBMITTED,
                "worker_consent": WorkerConsent.NOT_REQUESTED,
                "birth_date_differs_from_nik": False,
                "correction_count": 0,
                "batch_id": batch_id,
                "created_at": NOW,
                "status_changed_at": NOW,
            }
            for i in range(a, b)
        ],
        rows,
    )
    return opd_id, batch_id


def kpj_files(rows: int) -> tuple[bytes, bytes]:
    """The NIK -> KPJ file BPJS would send back, as XLSX and as CSV."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("KPJ")
    sheet.append(["Daftar KPJ Peserta BPU"])
    sheet.append([])
    sheet.append(["No", "NIK", "Nama", "No. KPJ"])
    text = io.StringIO()
    writer = csv.writer(text, delimiter=";")
    writer.writerow(["No", "NIK", "Nama", "No. KPJ"])
    for i in range(rows):
        line = [i + 1, nik_for(i), f"Pekerja Rentan Nomor {i}", kpj_for(i)]
        sheet.append(line)
        writer.writerow(line)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue(), text.getvalue().encode("utf-8")


# --- measurements ------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    backend: str
    rows: int
    export_s: list[float] = field(default_factory=list)
    export_mb: list[float] = field(default_factory=list)
    read_batch_s: list[float] = field(default_factory=list)
    write_only_s: list[float] = field(default_factory=list)
    csv_baseline_s: list[float] = field(default_factory=list)
    #: RSS growth of an export in a fresh process (the figure held to the target).
    export_child_mb: list[float] = field(default_factory=list)
    file_mb: float = 0.0
    preview: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    read_in_process: dict[str, list[float]] = field(default_factory=dict)


async def measure_export(
    database: AsyncEngine, cipher: NikCipher, batch_id: int, rows: int, directory: Path
) -> tuple[float, float, float]:
    """(wall seconds, RSS growth in MB, file size in MB) of one export."""
    path = directory / "kolektif.xlsx"
    with path.open("wb") as target, RssSampler() as memory:
        started = time.perf_counter()
        written = await export_batch(
            database,
            cipher,
            target,
            batch_id=batch_id,
            batch_number=BATCH_NUMBER,
            opd_name=OPD_NAME,
            created_at=NOW,
        )
        elapsed = time.perf_counter() - started
    if written != rows:
        raise BenchBroken(f"export wrote {written} rows, expected {rows}")
    sheet = load_workbook(path, read_only=True).active
    first = [
        row[1]
        for row in sheet.iter_rows(  # type: ignore[union-attr]
            min_row=HEADER_ROW + 1, max_row=HEADER_ROW + 3, values_only=True
        )
    ]
    if first != [nik_for(i) for i in range(min(3, rows))]:
        raise BenchBroken(f"the exported file starts with {first!r}")
    return elapsed, memory.growth_mb, path.stat().st_size / 1e6


async def export_in_child(url: str, batch_id: int, directory: Path) -> float:
    """RSS growth (MB) of one export in a fresh process that does nothing else.

    In this process the seeding has already grown the heap, so its VmRSS barely
    moves during an export; a fresh interpreter shows the export's own cost
    (imports and start-up are done before "before" is read).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_files",
        "--export-child",
        url,
        str(batch_id),
        str(directory / "child.xlsx"),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise BenchBroken(f"the export child failed with exit code {process.returncode}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return (int(result["peak_kb"]) - int(result["before_kb"])) / 1024


async def _export_child(url: str, batch_id: int, path: Path) -> None:
    database = create_engine(url)
    try:
        with path.open("wb") as target, RssSampler() as memory:
            await export_batch(
                database,
                NikCipher(KEY),
                target,
                batch_id=batch_id,
                batch_number=BATCH_NUMBER,
                opd_name=OPD_NAME,
                created_at=NOW,
            )
    finally:
        await database.dispose()
    print(json.dumps({"before_kb": memory.before_kb, "peak_kb": memory.peak_kb}))


def write_csv_baseline(rows: Sequence[CollectiveRow], path: Path) -> float:
    """Seconds to write the same cells as a plain CSV file (the cheapest serialisation)."""
    started = time.perf_counter()
    with path.open("w", encoding="utf-8", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(COLLECTIVE_HEADERS)
        for number, row in enumerate(rows, 1):
            writer.writerow(
                (
                    number,
                    row.nik,
                    row.full_name,
                    row.birth_date,
                    SEX_WORDS[row.sex] if row.sex is not None else "",
                    row.phone_e164 or "",
                    row.birth_place or "",
                    row.street_address or "",
                    row.village,
                    row.district,
                    row.regency or "",
                    row.regency or "",
                    occupation_word(row) or "",
                    RELATIONSHIP_WORDS[row.relationship],
                    LOWEST_INCOME_BRACKET,
                    "JKK+JKM",
                    row.sponsor_nip,
                    row.sponsor_name,
                    PLAN_WORDS[row.plan],
                    row.first_month,
                )
            )
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


async def measure_halves(
    database: AsyncEngine, cipher: NikCipher, batch_id: int, directory: Path
) -> tuple[float, float, float]:
    """Seconds to read the batch from the database, to write it from memory as XLSX, and
    to write it from memory as CSV (the baseline)."""
    started = time.perf_counter()
    async with database.begin() as connection:
        rows = [row async for row in collective_rows(connection, cipher, batch_id=batch_id)]
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    write_collective_xlsx(
        rows, io.BytesIO(), batch_number=BATCH_NUMBER, opd_name=OPD_NAME, created_at=NOW
    )
    write_s = time.perf_counter() - started
    return read_s, write_s, write_csv_baseline(rows, directory / "baseline.csv")


async def measure_preview(
    database: AsyncEngine, cipher: NikCipher, opd_id: int, name: str, content: bytes, rows: int
) -> tuple[float, float, float]:
    """Seconds: (read in a child process, preview, read in this process: the baseline)."""
    started = time.perf_counter()
    kpj_rows, empty = await read_kpj_file_isolated(name, content)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    read_kpj_file(name, content)
    in_process_s = time.perf_counter() - started
    started = time.perf_counter()
    async with database.begin() as connection:
        preview = await preview_import(
            connection, cipher, opd_id=opd_id, rows=kpj_rows, empty_rows=empty
        )
    preview_s = time.perf_counter() - started
    if len(preview.matched) != rows or preview.rejected:
        raise BenchBroken(
            f"{name}: {len(preview.matched)} matched, {preview.counts()} rejected of {rows}"
        )
    return read_s, preview_s, in_process_s


async def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            await connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()


async def run(url: str, directory: Path, *, rows: int, repeat: int) -> Figures:
    backend = "sqlite" if is_sqlite(url) else "postgresql"
    if backend != "sqlite":
        await _reset_postgres(url)
    await upgrade_to_head(url)
    database = create_engine(url)
    cipher = NikCipher(KEY)
    figures = Figures(backend=backend, rows=rows)
    try:
        started = time.perf_counter()
        opd_id, batch_id = await seed(database, cipher, rows)
        xlsx, csv_bytes = kpj_files(rows)
        seconds = time.perf_counter() - started
        print(f"seeded {rows} enrollments and made the KPJ files in {seconds:.1f} s")
        # Exports first: the halves below hold the whole batch in memory, which would
        # leave the allocator's arenas grown and hide an export's own growth.
        for _ in range(repeat):
            export_s, export_mb, figures.file_mb = await measure_export(
                database, cipher, batch_id, rows, directory
            )
            figures.export_s.append(export_s)
            figures.export_mb.append(export_mb)
        for _ in range(repeat):
            figures.export_child_mb.append(await export_in_child(url, batch_id, directory))
        for _ in range(repeat):
            read_s, write_s, csv_s = await measure_halves(database, cipher, batch_id, directory)
            figures.read_batch_s.append(read_s)
            figures.write_only_s.append(write_s)
            figures.csv_baseline_s.append(csv_s)
        for _ in range(repeat):
            for name, content in (("kpj.xlsx", xlsx), ("kpj.csv", csv_bytes)):
                gc.collect()
                read_s, preview_s, in_process_s = await measure_preview(
                    database, cipher, opd_id, name, content, rows
                )
                figures.preview.setdefault(name, []).append((read_s, preview_s))
                figures.read_in_process.setdefault(name, []).append(in_process_s)
    finally:
        await database.dispose()
    return figures


def _span(values: Sequence[float], unit: str = "s") -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} {unit}"
    return (
        f"median {statistics.median(values):.2f} {unit} "
        f"(min {min(values):.2f}, max {max(values):.2f})"
    )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(figures: Figures) -> None:
    export_s = statistics.median(figures.export_s)
    # The target is held against a fresh process's growth; this process's own
    # figure is shown too but is understated (its heap was grown by the seeding).
    export_mb = max(figures.export_child_mb)
    print(f"\n== collective file and KPJ import, {figures.rows} rows, {figures.backend} ==")
    print(f"{'measurement':38}{'result':44}{'target':>10}  verdict")
    print(
        f"{'export (database -> XLSX file)':38}{_span(figures.export_s):44}"
        f"{TARGET_EXPORT_S:>8.0f} s  {_verdict(export_s <= TARGET_EXPORT_S)}"
    )
    print(
        f"{'  RSS growth, fresh process (max)':38}{export_mb:<44.1f}"
        f"{TARGET_EXPORT_MB:>7.0f} MB  {_verdict(export_mb <= TARGET_EXPORT_MB)}"
    )
    print(f"{'  RSS growth, in this process (max)':38}{max(figures.export_mb):.1f}")
    print(f"{'  of which: read the batch alone':38}{_span(figures.read_batch_s)}")
    print(f"{'  of which: write the XLSX alone':38}{_span(figures.write_only_s)}")
    baseline_s = statistics.median(figures.csv_baseline_s)
    print(f"{'baseline: write the rows as CSV':38}{_span(figures.csv_baseline_s)}")
    print(f"{'  export / CSV baseline':38}{export_s / baseline_s:.1f}x")
    print(
        f"{'  write XLSX alone / CSV baseline':38}"
        f"{statistics.median(figures.write_only_s) / baseline_s:.1f}x"
    )
    print(f"{'  file size':38}{figures.file_mb:.1f} MB")
    verdicts: dict[str, str] = {}
    for name, timings in figures.preview.items():
        totals = [read + check for read, check in timings]
        verdicts[name] = _verdict(statistics.median(totals) <= TARGET_PREVIEW_S)
        print(
            f"{'preview ' + name + ' (read + classify)':38}{_span(totals):44}"
            f"{TARGET_PREVIEW_S:>8.0f} s  {verdicts[name]}"
        )
        print(f"{'  of which: read (child process)':38}{_span([read for read, _ in timings])}")
        print(f"{'  of which: preview_import':38}{_span([check for _, check in timings])}")
        in_process = figures.read_in_process[name]
        print(f"{'  baseline: read_kpj_file in process':38}{_span(in_process)}")
        isolated_s = statistics.median([read for read, _ in timings])
        print(
            f"{'  read in child / in process':38}{isolated_s / statistics.median(in_process):.2f}x"
        )
    print(
        json.dumps(
            {
                "benchmark": "files",
                "backend": figures.backend,
                "rows": figures.rows,
                "export_s": [round(v, 2) for v in figures.export_s],
                "export_rss_growth_mb": [round(v, 1) for v in figures.export_child_mb],
                "export_rss_growth_in_process_mb": [round(v, 1) for v in figures.export_mb],
                "read_batch_s": [round(v, 2) for v in figures.read_batch_s],
                "write_xlsx_s": [round(v, 2) for v in figures.write_only_s],
                "csv_baseline_s": [round(v, 2) for v in figures.csv_baseline_s],
                "export_to_csv_ratio": round(export_s / baseline_s, 2),
                "preview_s": {
                    name: [[round(r, 2), round(p, 2)] for r, p in timings]
                    for name, timings in figures.preview.items()
                },
                "read_in_process_s": {
                    name: [round(r, 2) for r in values]
                    for name, values in figures.read_in_process.items()
                },
                "export_target": _verdict(export_s <= TARGET_EXPORT_S),
                "memory_target": _verdict(export_mb <= TARGET_EXPORT_MB),
                "preview_targets": verdicts,
                "python": platform.python_version(),
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ),
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sertakan-bench-files-") as tmp:
        directory = Path(tmp)
        url = args.database_url or f"sqlite+aiosqlite:///{(directory / 'bench.db').as_posix()}"
        try:
            figures = await run(url, directory, rows=args.rows, repeat=args.repeat)
        except BenchBroken as exc:
            print(f"BROKEN RUN: {exc}")
            return 1
    report(figures)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=144_000, help="enrollments (default 144000)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each (default 3)")
    parser.add_argument(
        "--database-url",
        help="run on this database instead of a temporary SQLite file, e.g. "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/bench; its public schema is DROPPED first",
    )
    parser.add_argument("--export-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.export_child:
        url, batch_id, path = args.export_child
        asyncio.run(_export_child(url, int(batch_id), Path(path)))
        return 0
    if not 1 <= args.rows <= 989_901 or args.repeat < 1:
        parser.error("need 1 <= --rows <= 989901 and --repeat >= 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
