"""Per-connection SQLite settings and the NIK cipher."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import text

from storage.crypto import NikCipher, NikKeyError, decode_key, generate_key
from storage.db import create_engine, read_only


async def test_every_sqlite_connection_gets_wal_foreign_keys_and_busy_timeout(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", busy_timeout_ms=1234)
    try:
        for _ in range(2):  # a second pooled/new connection gets them too
            async with engine.connect() as connection:
                journal = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
                foreign = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()
                busy = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
                assert (journal, foreign, busy) == ("wal", 1, 1234)
            await engine.dispose()
    finally:
        await engine.dispose()


def test_nik_cipher_round_trip_and_keyed_hash() -> None:
    key = decode_key(generate_key())
    cipher = NikCipher(key)
    blob = cipher.encrypt("3201014708900001")
    assert b"3201014708900001" not in blob
    assert cipher.decrypt(blob) == "3201014708900001"
    assert cipher.encrypt("3201014708900001") != blob  # random nonce
    assert cipher.lookup_hash("3201014708900001") == NikCipher(key).lookup_hash("3201014708900001")
    other = NikCipher(decode_key(generate_key()))
    assert other.lookup_hash("3201014708900001") != cipher.lookup_hash("3201014708900001")
    with pytest.raises(InvalidTag):
        other.decrypt(blob)


def test_bad_keys_are_refused_with_a_reason() -> None:
    with pytest.raises(NikKeyError, match="32 bytes"):
        decode_key("c2hvcnQ=")
    with pytest.raises(NikKeyError, match="base64"):
        decode_key("not base64 at all!")


async def test_a_read_only_transaction_holds_no_write_lock(tmp_path: Path) -> None:
    """SQLite: while one connection reads in `read_only` (a page of the planner), another
    process's write transaction (BEGIN IMMEDIATE) commits at once, not after a busy wait;
    an ordinary transaction of the reader would hold the write lock until it ends."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locks.sqlite3'}"
    reader_engine = create_engine(url)
    writer_engine = create_engine(url, busy_timeout_ms=100)
    try:
        async with reader_engine.begin() as connection:
            await connection.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY)"))
        async with read_only(reader_engine) as reader:
            assert (await reader.execute(text("SELECT count(*) FROM item"))).scalar_one() == 0
            async with writer_engine.begin() as writer:
                await writer.execute(text("INSERT INTO item (id) VALUES (1)"))
            # One snapshot: the reader still sees the table as it was.
            assert (await reader.execute(text("SELECT count(*) FROM item"))).scalar_one() == 0
        async with reader_engine.begin() as holding:
            await holding.execute(text("SELECT count(*) FROM item"))
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                async with writer_engine.begin() as writer:
                    await writer.execute(text("INSERT INTO item (id) VALUES (2)"))
    finally:
        await reader_engine.dispose()
        await writer_engine.dispose()
