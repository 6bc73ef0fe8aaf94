"""Re-encrypting every worker's NIK under a new key (issue 14), against reading them all.

Seeds `--workers` workers encrypted with key 1 (plain inserts), then in one
run: the baseline, `census` (read every ciphertext in batches and decrypt it:
what `sertakan key list` and `retire` do), then one `reencrypt` pass under
key 2 (read, decrypt, encrypt, write back with compare-and-set, one
transaction per batch: what `sertakan key rotate` does), then `census` again
to check every row moved. Prints rows/s for both and the ratio.

    .venv/bin/python -m bench.bench_key_rotation --workers 144000
    .venv/bin/python -m bench.bench_key_rotation --workers 144000 \
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench_keys

A PostgreSQL database given is emptied first (its public schema is dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.nik import mask_nik
from domain.vocabulary import Sex
from storage import key_rotation
from storage.crypto import KeyRing, NikCipher
from storage.db import create_engine, is_sqlite
from storage.migrate import upgrade_to_head
from storage.models import Worker

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(1, 33))
NOW = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
CHUNK = 5000


def nik_for(index: int) -> str:
    return f"32{index // 10_000 % 100:02d}01470890{index % 10_000:04d}"


async def seed(database: AsyncEngine, cipher: NikCipher, workers: int) -> None:
    for start in range(0, workers, CHUNK):
        rows = [
            {
                "id": i + 1,
                "nik_hash": cipher.lookup_hash(nik_for(i)),
                "nik_ciphertext": cipher.encrypt(nik_for(i)),
                "nik_masked": mask_nik(nik_for(i)),
                "full_name": "Pekerja Rentan",
                "birth_date": date(1990, 8, 7),
                "sex": Sex.FEMALE,
                "village": "Sukamaju",
                "district": "Ciawi",
                "created_at": NOW,
                "updated_at": NOW,
            }
            for i in range(start, min(start + CHUNK, workers))
        ]
        async with database.begin() as connection:
            await connection.execute(insert(Worker), rows)


async def empty_postgres(url: str) -> None:
    database = create_engine(url)
    try:
        async with database.begin() as connection:
            await connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            await connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await database.dispose()


async def run(url: str, workers: int, batch_size: int) -> dict[str, object]:
    if not is_sqlite(url):
        await empty_postgres(url)
    await upgrade_to_head(url)
    database = create_engine(url)
    try:
        old = NikCipher(KEY_1)
        await seed(database, old, workers)
        rotated = NikCipher(KeyRing.single(KEY_1).with_key(KEY_2))

        started = time.perf_counter()
        before = await key_rotation.census(database, rotated, batch_size=batch_size)
        census_s = time.perf_counter() - started

        started = time.perf_counter()
        result = await key_rotation.reencrypt(database, rotated, batch_size=batch_size)
        reencrypt_s = time.perf_counter() - started

        after = await key_rotation.census(database, rotated, batch_size=batch_size)
    finally:
        await database.dispose()
    if before != {1: workers} or after != {2: workers} or result.rewritten["worker"] != workers:
        raise SystemExit(f"broken run: before {dict(before)}, after {dict(after)}")
    return {
        "database": "sqlite" if is_sqlite(url) else "postgresql",
        "workers": workers,
        "batch_size": batch_size,
        "census_s": round(census_s, 2),
        "census_rows_per_s": round(workers / census_s),
        "reencrypt_s": round(reencrypt_s, 2),
        "reencrypt_rows_per_s": round(workers / reencrypt_s),
        "ratio": round(reencrypt_s / census_s, 2),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--database-url", help="PostgreSQL to use (emptied); default: SQLite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}"
        figures = asyncio.run(run(url, args.workers, args.batch_size))
    print(
        f"{figures['database']}: {args.workers} workers, batches of {args.batch_size}\n"
        f"  census (read + decrypt):          {figures['census_s']} s, "
        f"{figures['census_rows_per_s']} rows/s (baseline)\n"
        f"  re-encrypt pass (+ encrypt, write): {figures['reencrypt_s']} s, "
        f"{figures['reencrypt_rows_per_s']} rows/s = {figures['ratio']}x the baseline"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
