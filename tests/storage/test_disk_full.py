"""SQLite on a full disk: the event that hit it is retried, and once space is back the bot
goes on by itself, with the write-ahead log's space returned to the disk.

A real full disk: a 2 MB tmpfs mounted for the test (needs root; skipped otherwise),
filled with a file until ENOSPC. The WhatsApp journal -> processor -> engine path runs
on it, as in production.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import OperationalError

from storage.db import create_engine, create_sessionmaker
from storage.migrate import upgrade_to_head
from storage.models import WhatsappInbound
from tests.bot.test_whatsapp_processor import rig
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.clock import FrozenClock
from tests.fakes.whatsapp_payloads import SITI

BALLAST = {
    "message_id": "wamid.ballast",
    "sender_id": "6280000000000",
    "payload_ciphertext": b"\0" * 200_000,
    "attempts": 0,
}


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` at `path`; skips the test when mounting is not permitted.

    2 MB: the migrated schema (about 40 tables with their indexes) and the 200 kB ballast
    must fit before the filler takes the rest; 1 MB stopped fitting with migrations 0013."""
    path.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def fill(path: Path) -> None:
    """Write `path` until the disk it is on is full."""
    chunk = b"\0" * 4096
    with path.open("wb", buffering=0) as filler:
        while True:
            try:
                filler.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return


async def test_a_message_that_hit_a_full_disk_is_handled_once_space_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        url = f"sqlite+aiosqlite:///{disk / 'bot.db'}"
        await upgrade_to_head(url)
        database = create_engine(url)
        wal = disk / "bot.db-wal"
        clock = FrozenClock()
        try:
            # Earlier traffic grew the WAL (written, not yet checkpointed into the file).
            async with database.begin() as connection:
                await connection.execute(
                    insert(WhatsappInbound).values(BALLAST | {"received_at": clock()})
                )
            async with database.begin() as connection:
                await connection.execute(delete(WhatsappInbound))
            async with rig(database, create_sessionmaker(database), clock=clock) as bot:
                await bot.post(wa.text(SITI, "halo"))  # journalled while there is space
                filler = disk / "filler"
                fill(filler)
                wal_when_full = size(wal)
                # The claim's or the engine's commit finds the disk full (`run` looks
                # again later when the claim itself fails).
                with caplog.at_level(logging.WARNING), contextlib.suppress(OperationalError):
                    await bot.drain()
                assert bot.sink.texts_to(SITI.sender_id) == []

                filler.unlink()  # space is back; no restart
                await bot.retry_later()
                wal_after = size(wal)  # measured while the bot runs (closing deletes the WAL)
            async with database.connect() as connection:
                rows = (await connection.execute(select(WhatsappInbound))).all()
        finally:
            await database.dispose()
        [reply] = bot.sink.texts_to(SITI.sender_id)  # answered once: not lost, not twice
        assert "belum kami kenal" in reply
        assert [row.processed_at for row in rows] == [clock()]
        # The WAL the full disk saw was checkpointed and its space given back (SQLite
        # otherwise keeps a WAL file at its largest size for as long as it is open).
        assert wal_after < wal_when_full
        assert "disk full or I/O error" in caplog.text
