"""Engine and session factory; SQLite gets WAL, foreign keys and a busy timeout.

SQLite statements run on the event loop's thread (`storage.sqlite_inline`) over
one pooled connection. Every transaction starts with BEGIN IMMEDIATE, so the conversation
"lock" of one event is the database write lock: two processes never interleave
the steps of one person. PostgreSQL uses SELECT ... FOR UPDATE instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from storage.sqlite_inline import InlineConnection, inline_connector

log = logging.getLogger(__name__)

#: The files SQLite keeps beside a database: the WAL, its index, a rollback journal.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


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
    return create_async_engine(url, echo=echo, pool_pre_ping=True)


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
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # WAL + NORMAL is durable against application crashes; only an OS crash
        # can lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        driver = conn.connection.driver_connection
        if isinstance(driver, InlineConnection):
            # Straight to sqlite3: a statement through SQLAlchemy costs ~0.1 ms per event.
            driver.sqlite3_connection.execute("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
