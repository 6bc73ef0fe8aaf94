"""Start-up waits for a database that is briefly away or locked, then fails clearly.

The waits go through an injected `sleep` that records them and, where a test
says so, brings the database back on its first call: no real waiting, no timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import StartupError, build_runtime
from bot.settings import AppSettings, DatabaseSettings, Settings
from storage.db import is_sqlite
from storage.migrate import current_revision, head_revision
from tests.bot.test_cli_run import _free_port


class Waits:
    """An injected `sleep`: records each wait and runs `on_first` at the first."""

    def __init__(self, on_first: Callable[[], Awaitable[None]] | None = None) -> None:
        self.delays: list[float] = []
        self._on_first = on_first

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) == 1 and self._on_first is not None:
            await self._on_first()


def _settings(tmp_path: Path, url: str, **database: object) -> Settings:
    return Settings(
        app=AppSettings(data_dir=tmp_path),
        database=DatabaseSettings(url=url, **database),  # type: ignore[arg-type]
    )


async def test_a_locked_sqlite_file_is_waited_for_and_then_migrated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the file's exclusive lock at start-up, and lets go after a moment."""
    path = tmp_path / "locked.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")

    async def release() -> None:
        other.execute("COMMIT")

    waits = Waits(on_first=release)
    url = f"sqlite+aiosqlite:///{path}"
    settings = _settings(tmp_path, url, sqlite_busy_timeout_ms=20)
    with caplog.at_level(logging.WARNING, logger="storage.db"):
        runtime = await build_runtime(settings, sleep=waits)
    try:
        assert await current_revision(url) == head_revision()
    finally:
        await runtime.close()
        other.close()
    assert waits.delays == [0.5]
    assert f"database {url} not reachable (database is locked), retrying in 0.5s" in caplog.text


async def test_a_database_that_never_comes_is_a_clear_startup_error_without_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()  # nothing listens there
    url = f"postgresql+asyncpg://sertakan:s3cret-pw@127.0.0.1:{port}/sertakan"
    waits = Waits()
    with (
        caplog.at_level(logging.WARNING, logger="storage.db"),
        pytest.raises(StartupError, match="not reachable") as failure,
    ):
        await build_runtime(_settings(tmp_path, url, startup_retry_s=20), sleep=waits)
    # Doubling waits, capped at 10 s each, adding up to the budget exactly.
    assert waits.delays == [0.5, 1.0, 2.0, 4.0, 8.0, 4.5]
    assert len([r for r in caplog.records if "retrying in" in r.getMessage()]) == 6
    assert f"127.0.0.1:{port}/sertakan" in str(failure.value)
    assert "s3cret-pw" not in caplog.text + str(failure.value)


async def test_a_wrong_configuration_fails_at_once(tmp_path: Path) -> None:
    """Not every error is worth waiting for: a file that is not a database fails the first time."""
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not SQLite" * 100)
    waits = Waits()
    with pytest.raises(Exception, match="not a database"):
        await build_runtime(_settings(tmp_path, f"sqlite+aiosqlite:///{path}"), sleep=waits)
    assert waits.delays == []


@contextlib.asynccontextmanager
async def _forwarder(
    port: int, host: str, target_port: int
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """`open()` starts forwarding 127.0.0.1:`port` to `host`:`target_port` (a PostgreSQL)."""
    servers: list[asyncio.Server] = []
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def connected(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, target_port)
        for task in (pipe(client_r, server_w), pipe(server_r, client_w)):
            started = asyncio.create_task(task)
            pipes.add(started)
            started.add_done_callback(pipes.discard)

    async def open_port() -> None:
        servers.append(await asyncio.start_server(connected, "127.0.0.1", port))

    try:
        yield open_port
    finally:
        for server in servers:
            server.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def test_postgresql_on_a_port_that_opens_later_is_reached(
    tmp_path: Path,
    database_url: str,
    db_engine: AsyncEngine,  # empties every table first: no other test's key or NIKs
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server refuses connections at first (still starting); the port opens after a wait."""
    if is_sqlite(database_url):
        pytest.skip("needs TEST_DATABASE_URL on PostgreSQL")
    target = make_url(database_url)
    port = _free_port()
    via_proxy = target.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    async with _forwarder(port, target.host or "127.0.0.1", target.port or 5432) as open_port:
        waits = Waits(on_first=open_port)
        with caplog.at_level(logging.WARNING, logger="storage.db"):
            runtime = await build_runtime(
                _settings(tmp_path, via_proxy), sleep=waits, migrate=False
            )
        try:
            async with runtime.db.connect() as connection:
                assert await connection.scalar(text("SELECT 41 + 1")) == 42
        finally:
            await runtime.close()
    assert waits.delays == [0.5]
    assert "not reachable (ConnectionRefusedError), retrying in 0.5s" in caplog.text
