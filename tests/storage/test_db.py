"""Per-connection SQLite settings and the NIK cipher."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.conversation_store import conversation_store
from storage.crypto import NikCipher, NikKeyError, decode_key, generate_key
from storage.db import create_engine, is_sqlite, read_only
from tests.fakes.chat import Chat, build_engine, seed_opds
from tests.fakes.clock import FrozenClock


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


# -- PostgreSQL: connections the server closed while they sat in the pool ----------------


def _running(pids: set[int]) -> bool:
    return any(Path(f"/proc/{pid}").exists() for pid in pids)


async def _terminate_backends(database_url: str) -> set[int]:
    """Terminate every other backend connected to the test database (as a restart or an
    administrator's `pg_terminate_backend` does) and wait until they are gone."""
    killer = create_engine(database_url)
    try:
        # Autocommit: within one transaction pg_stat_activity is a snapshot.
        async with killer.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            others = (
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            pids = set((await connection.exec_driver_sql(others)).scalars())
            for pid in pids:
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            for _ in range(500):
                # Gone from the server's list, and (the server on this machine) exited: its
                # sockets are closed, the end of file is on its way to the pool's connections.
                listed = set((await connection.exec_driver_sql(others)).scalars()) & pids
                if not listed and not _running(pids):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"backends {pids} still there")
        await asyncio.sleep(0.05)  # for the event loop to read it
        return pids
    finally:
        await killer.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one())


async def test_a_pooled_connection_whose_backend_was_killed_is_replaced(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """No pre-ping: the pool hands out another connection, without an error, when the
    server closed the one it kept (storage.db._configure_asyncpg)."""
    if is_sqlite(database_url):
        pytest.skip("PostgreSQL's pooled connections (TEST_DATABASE_URL)")
    first = await _backend_pid(db_engine)
    assert first in await _terminate_backends(database_url)
    second = await _backend_pid(db_engine)  # raised "connection was closed" before
    assert second != first
    assert await _backend_pid(db_engine) == second  # the new one is pooled in turn


async def test_an_update_after_its_connection_was_killed_is_handled(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """The engine step's connection comes from the pool without a pre-ping; after a
    restart-like kill of every pooled backend the next update is handled at once."""
    if is_sqlite(database_url):
        pytest.skip("PostgreSQL's pooled connections (TEST_DATABASE_URL)")
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    chat = Chat(build_engine(sessionmaker, clock), clock)
    await chat.say("/start")
    assert chat.question.options  # the main menu
    await _terminate_backends(database_url)
    await chat.say("/daftar")
    assert "NIP" in chat.question.text


async def test_a_burst_of_ten_transactions_keeps_its_connections(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """Ten transactions at once, twice: the second burst connects nothing anew (a pool
    that closed its overflow on return connected again per transaction)."""
    if is_sqlite(database_url):
        pytest.skip("PostgreSQL's pooled connections (TEST_DATABASE_URL)")

    async def sessions() -> int:
        async with db_engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql("SELECT pg_stat_force_next_flush()")
            query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            return int((await connection.exec_driver_sql(query)).scalar_one())

    async def burst() -> None:
        async def one(started: asyncio.Barrier) -> None:
            async with db_engine.begin() as connection:
                await started.wait()  # all ten connections out at once
                await connection.exec_driver_sql("SELECT 1")

        started = asyncio.Barrier(10)
        await asyncio.gather(*(one(started) for _ in range(10)))

    await burst()
    before = await sessions()
    await burst()
    assert await sessions() == before


async def test_a_step_whose_connection_is_lost_at_its_first_statement_runs_once_more(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection the server closed that the checkout did not see closed yet (its end of
    file still on the way) fails the claim as a disconnect: nothing was written, and the
    engine runs the step again on a fresh connection, once."""
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    chat = Chat(build_engine(sessionmaker, clock), clock)
    failures = iter([True, False, True, True])

    async def flaky_store(connection: Any) -> Any:
        store = await conversation_store(connection)
        claim = store.claim

        async def lost_or_claim(*args: Any) -> bool:
            if next(failures):
                raise DBAPIError(
                    "INSERT INTO processed_update",
                    {},
                    OSError("reset"),
                    connection_invalidated=True,
                )
            return await claim(*args)

        store.claim = lost_or_claim  # type: ignore[method-assign, assignment]
        return store

    monkeypatch.setattr("handlers.engine.conversation_store", flaky_store)
    await chat.say("/start")  # lost once, then handled
    assert chat.question.options
    with pytest.raises(DBAPIError):  # lost twice: the caller's retry (bot.retry_policy)
        await chat.say("/start")
