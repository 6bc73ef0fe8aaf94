"""Per-connection SQLite settings and the NIK cipher."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import text

from storage import db
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


def test_begin_immediate_waits_for_the_write_lock_in_small_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's write transaction: BEGIN IMMEDIATE is tried again after sleeps of
    BEGIN_RETRY_S (not SQLite's busy handler, whose sleeps are 1 ms and more) until the
    lock is free; the connection's busy timeout is back afterwards."""
    path = tmp_path / "lock.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE item (id INTEGER PRIMARY KEY)")
        waiter.execute("PRAGMA busy_timeout=5000")
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO item (id) VALUES (1)")
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 3:
                holder.execute("COMMIT")  # the other process lets go

        monkeypatch.setattr("storage.db.time.sleep", sleep)
        db.begin_immediate(waiter, 5000)
        assert sleeps == [db.BEGIN_RETRY_S] * 3
        assert waiter.in_transaction
        waiter.execute("INSERT INTO item (id) VALUES (2)")
        waiter.execute("COMMIT")
        assert waiter.execute("PRAGMA busy_timeout").fetchone() == (5000,)
        assert waiter.execute("SELECT count(*) FROM item").fetchone() == (2,)
    finally:
        holder.close()
        waiter.close()


def test_begin_immediate_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "lock.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            db.begin_immediate(waiter, 20)
        assert not waiter.in_transaction
        assert waiter.execute("PRAGMA busy_timeout").fetchone() == (20,)
    finally:
        holder.close()
        waiter.close()
