"""Issue 14: back up, wipe, restore, and the bot serves the same records.

On the session's database: SQLite through `sertakan backup` (SQLite's online
backup API) and a file copy back; PostgreSQL through `sertakan backup`
(pg_dump) and pg_restore, skipped when the PostgreSQL client is not installed.
The NIK key lives in its own folder and is not in the backup.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import build_runtime, seed_opds_if_empty
from bot.cli import main
from storage.backup import libpq_target
from storage.crypto import generate_key
from storage.db import create_engine, is_sqlite
from tests.bot.test_key_rotation import enroll, new_asn, settings_for, worker_niks
from tests.fakes.chat import Chat
from tests.fakes.clock import FrozenClock
from tests.storage.test_collective import nik_for


def delete_sqlite_files(database_url: str) -> None:
    database = Path(str(make_url(database_url).database))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    assert not database.exists()


async def wipe(database_url: str) -> None:
    """Lose the database: the SQLite files deleted, PostgreSQL's schema dropped."""
    if is_sqlite(database_url):
        delete_sqlite_files(database_url)
        return
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            await connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()


def restore(database_url: str, dump: Path) -> None:
    """Put the backup back as docs/DEPLOY.md says (the bot stopped)."""
    if is_sqlite(database_url):
        shutil.copyfile(dump, str(make_url(database_url).database))
        return
    target, password = libpq_target(database_url)
    pg_restore = shutil.which("pg_restore")
    assert pg_restore is not None
    subprocess.run(
        [pg_restore, "--no-owner", "--exit-on-error", f"--dbname={target}", str(dump)],
        env={"PATH": "/usr/bin:/bin", **password},
        check=True,
        capture_output=True,
    )


async def my_workers(asn: Chat) -> str:
    await asn.say("/start")
    await asn.press("Pekerja saya")
    return asn.replies[0].text


async def test_back_up_wipe_restore_and_the_bot_serves_the_same_records(
    tmp_path: Path,
    database_url: str,
    db_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not is_sqlite(database_url) and shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not on PATH (Debian: apt-get install postgresql-client)")
    # The key in a folder of its own, never next to the database or its backups.
    key = generate_key()
    ring_file = tmp_path / "keys" / "nik.key"
    ring_file.parent.mkdir()
    ring_file.write_text(key + "\n")
    settings = settings_for(tmp_path / "data", database_url, ring_file)
    clock = FrozenClock()
    bot = await build_runtime(settings, clock=clock, migrate=False)
    try:
        assert await seed_opds_if_empty(bot) > 0
        asn = await new_asn(bot, clock, 0)
        other = await new_asn(bot, clock, 1)
        await enroll(asn, nik_for(1), "Siti Aminah")
        await enroll(asn, nik_for(2), "Joko Susilo")
        await enroll(other, nik_for(3), "Dewi Lestari")
        listing = await my_workers(asn)
        assert "Siti Aminah" in listing and "Joko Susilo" in listing
        assert "Dewi Lestari" not in listing
        niks = await worker_niks(bot.db, bot.cipher)

        # `sertakan backup` while the bot runs (and serves: a step after it).
        dump = tmp_path / "backups" / "sertakan.backup"
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path / "data"))
        assert await asyncio.to_thread(main, ["backup", str(dump)]) == 0
        assert dump.stat().st_mode & 0o777 == 0o600
        assert await asyncio.to_thread(main, ["backup", str(dump)]) == 1  # never overwritten
        await enroll(other, nik_for(4), "Made Wirawan")
    finally:
        await bot.close()
    raw_key = base64.urlsafe_b64decode(key)
    content = dump.read_bytes()
    assert raw_key not in content and key.encode() not in content

    await db_engine.dispose()
    await wipe(database_url)
    restore(database_url, dump)

    clock = FrozenClock()
    restored = await build_runtime(settings, clock=clock, migrate=False)
    try:
        assert await worker_niks(restored.db, restored.cipher) == niks
        asn = Chat(restored.engine, clock, sender=asn.sender)
        assert await my_workers(asn) == listing
        # The enrollment made after the backup is gone with the wipe: enrolling it again works,
        # one from before is still a duplicate.
        other = Chat(restored.engine, clock, sender=other.sender)
        await enroll(other, nik_for(4), "Made Wirawan")
        await other.say("/daftar")
        await other.press("Bekerja untuk saya")
        await other.press("Asisten rumah tangga")
        await other.say("Siapa Saja")
        await other.say(nik_for(1))
        assert "sudah terdaftar" in other.text
    finally:
        await restored.close()
