"""Engine and session factory; SQLite gets WAL, foreign keys and a busy timeout.

SQLite statements run on the event loop's thread (`storage.sqlite_inline`) over
one pooled connection. Every transaction starts with BEGIN IMMEDIATE, so the conversation
"lock" of one event is the database write lock: two processes never interleave
the steps of one person. PostgreSQL uses SELECT ... FOR UPDATE instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from storage.sqlite_inline import InlineConnection, inline_connector

log = logging.getLogger(__name__)

#: The files SQLite keeps beside a database: the WAL, its index, a rollback journal.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

#: OSErrors that mean "wrong configuration", not "not there yet".
_PERMANENT_OS_ERRORS: Final = (
    PermissionError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
)
#: SQLite errors another process's lock causes (SQLITE_BUSY, SQLITE_LOCKED).
_SQLITE_LOCK_MESSAGES: Final = ("database is locked", "database table is locked")
#: asyncpg's errors of a server that is starting, shutting down or full (by name: no stubs).
_POSTGRES_NOT_READY: Final = frozenset({"CannotConnectNowError", "TooManyConnectionsError"})


#: The execution option of a connection that only reads (`read_only`).
READ_ONLY_OPTION: Final = "sertakan_read_only"


@contextlib.asynccontextmanager
async def read_only(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that only reads, rolled back at the end.

    SQLite: a deferred BEGIN instead of BEGIN IMMEDIATE, so its reads (one WAL
    snapshot) hold no write lock: a writer, the event loop's chats included,
    never waits for them. PostgreSQL: an ordinary transaction.
    """
    async with engine.connect() as connection:
        await connection.execution_options(**{READ_ONLY_OPTION: True})
        await connection.begin()
        yield connection  # closing the connection rolls the transaction back


def insert_for(dialect_name: str) -> Callable[[Any], Any]:
    """The dialect's INSERT construct, which offers ON CONFLICT DO NOTHING (SQLite, PostgreSQL)."""
    return postgresql.insert if dialect_name == "postgresql" else sqlite.insert


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, busy_timeout_ms: int = 5000, echo: bool = False) -> AsyncEngine:
    """Create the async engine for `url` with the per-connection settings we rely on."""
    if is_sqlite(url):
        database = make_url(url).database
        file_db = bool(database) and database != ":memory:"
        if database and file_db:
            protect_sqlite_files(Path(database))
        # One connection per file database: transactions of this process queue
        # (asynchronously) at checkout, so an in-loop BEGIN IMMEDIATE never waits
        # on our own lock. (":memory:" already gets SQLAlchemy's StaticPool.)
        pool: dict[str, Any] = (
            {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60} if file_db else {}
        )
        engine = create_async_engine(
            url,
            echo=echo,
            async_creator=inline_connector(database or ":memory:"),
            **pool,
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    if make_url(url).get_driver_name() != "asyncpg":
        return create_async_engine(url, echo=echo, pool_pre_ping=True)
    engine = create_async_engine(
        url, echo=echo, pool_size=POSTGRESQL_POOL_SIZE, max_overflow=POSTGRESQL_POOL_OVERFLOW
    )
    _configure_asyncpg(engine)
    return engine


_ASYNCPG_STUCK: Final = "cannot switch to state"

#: Connections a process keeps open to PostgreSQL, and how many more it opens at a peak.
#: An overflow connection is closed when it comes back, so a peak above the kept ones
#: connects and disconnects per transaction: a new server process, authentication and
#: the driver's set-up each time. With SQLAlchemy's default of 5 kept, a machine slowed
#: down (steps in flight for seconds) made 106-209 new connections per 400 updates of
#: bench_cluster at 40/s (docs/BENCHMARKS.md, "cost").
#: All kept, none opened at a peak: with 10 kept and 5 more, a province of two processes
#: at 70 % of its saturation opened 393 connections in 10 s and its p99 was 704 ms; with
#: this pool and the send budget's both kept (10, no overflow), 0 and 40 ms
#: (docs/BENCHMARKS.md section 18). With the send budget's and the reply queue's pools a
#: process holds 27, so three workers stay within PostgreSQL's default
#: `max_connections` of 100 (docs/DEPLOY.md); a step beyond 15 at once waits its turn.
POSTGRESQL_POOL_SIZE: Final = 15
POSTGRESQL_POOL_OVERFLOW: Final = 0


def _configure_asyncpg(engine: AsyncEngine) -> None:
    """A pooled connection the server closed is replaced at checkout, without a round trip.

    `pool_pre_ping` asks the server at every checkout: on asyncpg three round trips
    (BEGIN, an empty statement, ROLLBACK), 3 of the ~17 an engine step made
    (docs/BENCHMARKS.md, "cost"). What it caught is a connection the server closed
    while it sat in the pool: a restart, `pg_terminate_backend`, an idle timeout. The
    server says so on the socket (an error, then end of file), and asyncpg, which
    reads every connection's socket on the event loop even while it is idle, marks the
    connection closed: `is_closed()` is that mark, read locally. A closed one is
    discarded here and the pool hands out another (or connects afresh). Left to
    SQLAlchemy's disconnect handling: a close that arrives between the checkout and
    the first statement, or a peer gone without a word (which a ping would not catch
    either before the network's timeout). The statement then fails as a disconnect,
    SQLAlchemy invalidates the pool's older connections, and the caller retries
    (an inbound update: `bot.retry_policy`, the webhook's 500).
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this pooled connection")

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # The server's "terminating connection" error read while the connection sat in
        # the pool, its end of file not yet: asyncpg waits for a ReadyForQuery that never
        # comes and refuses the next statement with this. A disconnect, so the
        # connection is replaced and the failure counts as one that heals.
        if _ASYNCPG_STUCK in str(context.original_exception):
            context.is_disconnect = True


def side_pool(
    database: AsyncEngine, *, size: int, overflow: int, autocommit: bool = False
) -> AsyncEngine:
    """A small pool of its own to `database`'s PostgreSQL server, for short bookkeeping
    statements that must not queue behind the application's pool (the send budget's
    takes; the reply queue's lease renewals and deletes): with every application
    connection busy for a pool timeout under load, renewals failed, leases ran out and
    other processes sent the replies again. Without the pre-ping; on asyncpg a pooled
    connection the server closed is discarded at checkout, as the application's are
    (`_configure_asyncpg`). SQLite (one process, one connection per file) gets
    `database` itself."""
    if database.dialect.name != "postgresql":
        return database
    engine = create_async_engine(
        database.url,
        pool_size=size,
        max_overflow=overflow,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )
    if database.url.get_driver_name() == "asyncpg":
        _configure_asyncpg(engine)
    return engine


def protect_sqlite_files(database: Path) -> None:
    """Make the database file and its companions owner-only (0600); create it so if missing.

    They hold names, birth dates and phone numbers. SQLite gives the WAL and
    its index the database file's mode, so creating the file 0600 covers them;
    files left readable by others (an older version, a copy) are tightened and
    logged.
    """
    database.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for path in (database, *(Path(f"{database}{suffix}") for suffix in SQLITE_COMPANIONS)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            path.chmod(0o600)
            log.warning("%s was readable by other users (mode %o): now 600", path, mode)


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # First: switching to WAL needs the file's lock, and waits this long for it
        # (not sqlite3's own 5 s default).
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL + NORMAL is durable against application crashes; only an OS crash
        # can lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    trouble = _DiskTrouble()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if _disk_problem(context.original_exception):
            # A fresh connection next time: nothing of the failed one (an open
            # transaction, a half-written statement) can get in the way.
            context.is_disconnect = True
            if not trouble.pending:
                log.error("SQLite: disk full or I/O error; will recover when it passes")
            trouble.pending = True

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        if trouble.pending and dbapi_connection is not None:
            trouble.pending = not _checkpoint(dbapi_connection)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        driver = conn.connection.driver_connection
        # A reader (`READ_ONLY`) takes no write lock: a deferred BEGIN reads one WAL
        # snapshot while writers go on (and is never waited for by them).
        begin = "BEGIN" if conn.get_execution_options().get(READ_ONLY_OPTION) else "BEGIN IMMEDIATE"
        if isinstance(driver, InlineConnection):
            # Straight to sqlite3: a statement through SQLAlchemy costs ~0.1 ms per event.
            driver.sqlite3_connection.execute(begin)
        else:
            conn.exec_driver_sql(begin)


class _DiskTrouble:
    """Per engine: a disk-full or I/O error happened and the WAL was not checkpointed since."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = False


#: SQLite's primary result codes for "disk full" (SQLITE_FULL) and I/O errors (SQLITE_IOERR).
_SQLITE_DISK_CODES: Final = frozenset({13, 10})


def _disk_problem(exc: BaseException | None) -> bool:
    while exc is not None:
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_DISK_CODES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _checkpoint(dbapi_connection: Any) -> bool:
    """Copy the WAL into the database and truncate it to 0 bytes; True when it completed.

    Run when a connection goes back to the pool after a disk problem: while
    the disk is full it fails (and is tried again at the next check-in); once
    space is back it returns the WAL's space to the disk, which a disk-full
    spell leaves grown (SQLite otherwise reuses a WAL file, never shrinks it).
    """
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    connection = getattr(driver, "sqlite3_connection", None)
    if not isinstance(connection, sqlite3.Connection) or connection.in_transaction:
        return False
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        log.warning("SQLite: checkpoint after a disk problem failed: %s", exc)
        return False
    if busy:
        return False
    log.warning("SQLite: disk problem over, write-ahead log checkpointed and truncated")
    return True


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class DatabaseUnreachable(RuntimeError):
    """The database stayed unreachable (or locked) for the whole start-up retry budget."""


def safe_url(url: str) -> str:
    """`url` for logs and messages: the password is shown as ***."""
    return make_url(url).render_as_string(hide_password=True)


def transient_reason(exc: BaseException) -> str | None:
    """Why `exc` may pass by itself (refused, reset, locked, server starting); None: it will not.

    Looks through the exception's causes (SQLAlchemy wraps the driver's
    errors, asyncpg raises OSError unwrapped). The reason names the error's
    type and, for SQLite, its fixed message; never a URL or a statement.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and not isinstance(current, _PERMANENT_OS_ERRORS):
            return type(current).__name__  # refused, reset, unreachable, DNS, timeout
        if isinstance(current, sqlite3.OperationalError) and str(current) in _SQLITE_LOCK_MESSAGES:
            return str(current)
        if type(current).__name__ in _POSTGRES_NOT_READY:
            return type(current).__name__
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return None


async def probe(url: str, *, busy_timeout_ms: int = 5000) -> None:
    """Connect to `url` and open a write transaction (SQLite: BEGIN IMMEDIATE), then let go.

    Raises what the driver raises: refused, locked, wrong password, ...
    """
    engine = create_engine(url, busy_timeout_ms=busy_timeout_ms)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def retry_while_unreachable(
    operation: Callable[[], Awaitable[T]],
    *,
    url: str,
    budget_s: float,
    sleep: Sleep = asyncio.sleep,
    first_delay_s: float = 0.5,
    max_delay_s: float = 10.0,
) -> T:
    """Run `operation`; while it fails with a `transient_reason`, wait and try again.

    The waits double from `first_delay_s` up to `max_delay_s` and add up to
    at most `budget_s` (time spent inside `operation`, such as a connect
    timeout, comes on top). Each wait logs "database <url, password hidden> not
    reachable (<reason>), retrying in <n>s". Other errors are raised at once;
    when the budget is spent, `DatabaseUnreachable` says for how long and why.
    """
    waited = 0.0
    delay = first_delay_s
    while True:
        try:
            return await operation()
        except Exception as exc:
            reason = transient_reason(exc)
            if reason is None:
                raise
            delay = min(delay, budget_s - waited)
            if delay <= 0:
                raise DatabaseUnreachable(
                    f"database {safe_url(url)} not reachable ({reason}); "
                    f"gave up after retrying for {waited:.0f}s"
                ) from exc
            log.warning(
                "database %s not reachable (%s), retrying in %.1fs", safe_url(url), reason, delay
            )
        await sleep(delay)
        waited += delay
        delay = min(delay * 2, max_delay_s)
