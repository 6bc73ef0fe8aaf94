"""Per-connection SQLite settings and the NIK cipher."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from storage.crypto import NikCipher, NikKeyError, decode_key, generate_key
from storage.db import create_engine


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
