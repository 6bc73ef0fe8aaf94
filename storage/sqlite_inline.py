"""An aiosqlite-compatible connection that runs sqlite3 calls on the event loop's thread.

aiosqlite hands every call to a worker thread and back: three or four thread
hops per statement, which measured at about 0.1 ms each on our 2-core servers
and dominated the cost of an update (docs/BENCHMARKS.md). A local SQLite
statement of the engine's takes microseconds, so running it in place is cheaper
than the hop. SQLAlchemy's aiosqlite dialect drives this object through its
supported `async_creator` hook; each awaitable completes without suspending.

The limit: a statement that has to wait for SQLite's lock (another process
writing) blocks the event loop for up to the busy timeout. `storage.db` keeps
one pooled connection per SQLite engine, so transactions of this process queue
asynchronously at checkout and never wait on each other's lock; a second
process (the CLI loading OPDs) waits at most the busy timeout. Deployments with
several bot processes use PostgreSQL (README, "Running at scale").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class _Immediate:
    """Stands in for aiosqlite's request queue: runs the call at once."""

    __slots__ = ()

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # handed to the awaiting caller, as aiosqlite does
            future.set_exception(exc)


class InlineCursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """The subset of `aiosqlite.Connection` that SQLAlchemy's dialect uses."""

    __slots__ = ("_conn", "_tx")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._tx = _Immediate()

    @property
    def sqlite3_connection(self) -> sqlite3.Connection:
        """The underlying connection, for code that runs plain sqlite3 in the same transaction."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        return InlineCursor(self._conn.execute(sql, parameters))

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        """Called by SQLAlchemy when it terminates a connection."""
        self._conn.close()


def inline_connector(database: str) -> Callable[[], Any]:
    """The `async_creator` for SQLAlchemy: opens `database` with sqlite3 in place."""

    async def connect() -> InlineConnection:
        # check_same_thread=False: Alembic's env may dispose from another thread;
        # sqlite3 itself is built thread-safe (serialized).
        return InlineConnection(sqlite3.connect(database, check_same_thread=False))

    return connect
