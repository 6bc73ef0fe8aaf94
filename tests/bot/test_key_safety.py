"""Issue 11: the NIK key checked on every start, the development key file, private files.

Each test has its own SQLite file (file modes, a database at an older schema);
`test_a_different_key_is_refused_on_the_test_database` runs on the session's
database (PostgreSQL with TEST_DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import Runtime, StartupError, build_runtime
from bot.cli import main
from bot.settings import AppSettings, DatabaseSettings, Settings
from domain.vocabulary import Channel
from storage.crypto import NikCipher, generate_key
from storage.dead_letters import DeadLetters
from storage.migrate import alembic_config, current_revision, head_revision
from storage.models import KeyCheck
from tests.fakes.chat import TEST_KEY
from tests.fakes.runtime import open_runtime
from tests.storage.test_collective import Seeder

KEY_A = base64.urlsafe_b64encode(TEST_KEY).decode("ascii")
KEY_B = generate_key()
ID_A = NikCipher(TEST_KEY).key_id
NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual permissive umask (files 0644), restored afterwards."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def settings(tmp_path: Path, key: str | None) -> Settings:
    return Settings(
        app=AppSettings(data_dir=tmp_path, nik_key=None if key is None else SecretStr(key)),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'sertakan.db'}"),
    )


def snapshot(database: Path) -> list[str]:
    """Every table's schema and rows, as SQL."""
    with sqlite3.connect(database) as connection:
        return list(connection.iterdump())


async def park_update(runtime: Runtime) -> None:
    """Something encrypted with the runtime's key (a parked update, as the channels write)."""
    await DeadLetters(runtime.sessionmaker, runtime.cipher).park(
        channel=Channel.TELEGRAM,
        update_id="77",
        sender_id="42",
        payload='{"text": "3201014708900001"}',
        error_type="OperationalError",
        attempts=5,
        now=NOW,
    )


async def recorded_keys(runtime: Runtime) -> list[str]:
    async with runtime.db.connect() as connection:
        return list(await connection.scalars(select(KeyCheck.key_id)))


async def test_a_new_database_records_the_key_id(tmp_path: Path) -> None:
    runtime = await build_runtime(settings(tmp_path, KEY_A))
    try:
        assert await recorded_keys(runtime) == [ID_A]
    finally:
        await runtime.close()


async def test_a_different_key_is_refused_at_start_and_nothing_is_written(tmp_path: Path) -> None:
    # Regression (issue 11): another SERTAKAN_NIK_KEY was accepted silently; its
    # lookup hashes let the same NIK be enrolled twice.
    runtime = await build_runtime(settings(tmp_path, KEY_A))
    try:
        async with runtime.db.begin() as connection:
            seeder = Seeder(connection)  # a NIK encrypted with KEY_A (TEST_KEY)
            await seeder.worker("3201014708900001")
    finally:
        await runtime.close()
    before = snapshot(tmp_path / "sertakan.db")

    with pytest.raises(StartupError) as refused:
        await build_runtime(settings(tmp_path, KEY_B))

    message = str(refused.value)
    other_id = NikCipher(base64.urlsafe_b64decode(KEY_B)).key_id
    assert f"expects key id {ID_A}" in message and f"has id {other_id}" in message
    assert "Restore the key" in message and "SERTAKAN_NIK_KEY" in message
    assert "Nothing was changed" in message
    assert snapshot(tmp_path / "sertakan.db") == before


async def test_a_different_key_is_refused_on_the_test_database(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine
) -> None:
    async with open_runtime(tmp_path, database_url, nik_key=KEY_A):
        pass
    with pytest.raises(StartupError, match=f"expects key id {ID_A}"):
        async with open_runtime(tmp_path, database_url, nik_key=KEY_B):
            pass
    async with db_engine.connect() as connection:
        assert list(await connection.scalars(select(KeyCheck.key_id))) == [ID_A]


def test_every_cli_command_on_the_database_refuses_a_different_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SERTAKAN_NIK_KEY", KEY_A)
    csv = tmp_path / "opd.csv"
    csv.write_text("code,name\nA-1,Dinas Satu\n", encoding="utf-8")
    assert main(["opd", "load", str(csv)]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path / "sertakan.db")

    monkeypatch.setenv("SERTAKAN_NIK_KEY", KEY_B)
    csv.write_text("code,name\nA-2,Dinas Dua\n", encoding="utf-8")
    for argv in (["opd", "load", str(csv)], ["failed", "list"], ["pic", "list"], ["console"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "does not match this database" in err and ID_A in err, argv
    assert snapshot(tmp_path / "sertakan.db") == before


async def test_an_old_database_is_checked_by_decrypting_before_it_is_migrated(
    tmp_path: Path,
) -> None:
    # The upgrade path: a database from before key_check, with encrypted data.
    url = f"sqlite+aiosqlite:///{tmp_path / 'sertakan.db'}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0005")
    runtime = await build_runtime(settings(tmp_path, KEY_A), migrate=False)
    try:
        await park_update(runtime)
    finally:
        await runtime.close()

    with pytest.raises(StartupError, match="cannot decrypt the NIKs already stored"):
        await build_runtime(settings(tmp_path, KEY_B), migrate=True)
    assert await current_revision(url) == "0005"  # not even migrated

    runtime = await build_runtime(settings(tmp_path, KEY_A), migrate=True)
    try:
        assert await current_revision(url) == head_revision()
        assert await recorded_keys(runtime) == [ID_A]
    finally:
        await runtime.close()


@pytest.mark.parametrize("with_data", [True, False], ids=["encrypted data", "key id only"])
async def test_a_lost_development_key_file_is_not_replaced(
    tmp_path: Path, with_data: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression (issue 11): development mode made a new key file without a word.
    key_file = tmp_path / "nik.key"
    with caplog.at_level(logging.WARNING, logger="bot.app"):
        runtime = await build_runtime(settings(tmp_path, None))
    assert "created a new NIK key file" in caplog.text
    try:
        if with_data:
            await park_update(runtime)
    finally:
        await runtime.close()
    key_file.unlink()
    before = snapshot(tmp_path / "sertakan.db")

    with pytest.raises(StartupError) as refused:
        await build_runtime(settings(tmp_path, None))

    message = str(refused.value)
    assert f"the NIK key file {key_file} is missing" in message
    assert "restore the key file from your backup" in message
    assert not key_file.exists()
    assert snapshot(tmp_path / "sertakan.db") == before


async def test_sqlite_database_and_wal_are_owner_only(tmp_path: Path, umask_022: None) -> None:
    # Regression (issue 11): the database and its WAL were created 0644.
    runtime = await build_runtime(settings(tmp_path, KEY_A))
    try:
        await park_update(runtime)
        files = [tmp_path / name for name in ("sertakan.db", "sertakan.db-wal", "sertakan.db-shm")]
        assert all(path.exists() for path in files)
        assert {path.name: path.stat().st_mode & 0o777 for path in files} == {
            path.name: 0o600 for path in files
        }
    finally:
        await runtime.close()


async def test_readable_sqlite_files_are_tightened_at_start(
    tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = await build_runtime(settings(tmp_path, KEY_A))
    await runtime.close()
    database, wal = tmp_path / "sertakan.db", tmp_path / "sertakan.db-wal"
    wal.touch()
    database.chmod(0o644)
    wal.chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="storage.db"):
        runtime = await build_runtime(settings(tmp_path, KEY_A))
    await runtime.close()
    assert database.stat().st_mode & 0o777 == 0o600
    # (SQLite removes the empty WAL when its last connection closes.)
    assert f"{database} was readable by other users (mode 644): now 600" in caplog.text
    assert f"{wal} was readable by other users (mode 644): now 600" in caplog.text


def test_files_written_by_the_cli_are_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SERTAKAN_NIK_KEY", raising=False)
    report = tmp_path / "coverage.csv"

    assert main(["coverage", "--csv", str(report)]) == 0

    assert report.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "nik.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sertakan.db").stat().st_mode & 0o777 == 0o600
