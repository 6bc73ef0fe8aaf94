"""Which NIK key a database belongs to (issue 11): checked on every start.

A database encrypted with one key and opened with another would fail to read
its NIKs and, worse, compute other lookup hashes, so the same NIK could be
enrolled a second time. `key_check` holds the key's id and check value
(`NikCipher.key_id`, `NikCipher.check_value`):

- a key whose check value is stored: accepted;
- other keys stored, not this one: `KeyMismatch` (expected ids, given id);
- nothing stored yet: the key must decrypt one existing ciphertext of each
  kind (worker NIK, parked update, WhatsApp journal, a conversation's draft
  NIK), otherwise `KeyMismatch`; then `confirm` stores its check value.

`verify` only reads and copes with tables an older schema lacks, so it runs
before migrations; `confirm` runs after them, in the caller's transaction.
Several rows are a key ring (`storage.crypto.KeyRing`): every stored key must be in
the ring given, or start-up is refused; ring keys not stored yet (a key just
added by `sertakan key rotate`) are stored by `confirm`; `forget` removes a
retired key's row.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import Text, cast, delete, inspect, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.crypto import NikCipher
from storage.db import insert_for
from storage.models import Conversation, FailedUpdate, KeyCheck, WhatsappInbound, Worker

#: The draft key under which flows keep a NIK's ciphertext (base64).
_DRAFT_NIK = "nik_enc"


class KeyMismatch(Exception):
    """The key is not the one this database was encrypted with."""

    def __init__(self, *, given: str, expected: tuple[str, ...]) -> None:
        self.given = given
        #: The key ids stored in `key_check`; empty when none was stored yet and
        #: the key failed to decrypt existing data.
        self.expected = expected
        if expected:
            ids = ", ".join(expected)
            reason = f"the database expects key id {ids}, the key given has id {given}"
        else:
            reason = f"the key given (id {given}) cannot decrypt the NIKs already stored"
        super().__init__(reason)


class Verdict(StrEnum):
    """What `verify` found (a mismatch is raised instead)."""

    #: This key's check value is stored.
    KNOWN = "known"
    #: No check value yet and nothing encrypted: a new database.
    EMPTY = "empty"
    #: No check value yet; the key decrypted the data already stored.
    DECRYPTS = "decrypts"
    #: Every stored key is in the ring, which also holds keys not yet stored.
    ADDED = "added"


@dataclasses.dataclass(slots=True, frozen=True)
class _Samples:
    """One ciphertext of each kind, where the schema and the data have one."""

    stored: tuple[tuple[str, bytes], ...]
    nik: bytes | None
    payloads: tuple[bytes, ...]
    draft_nik: bytes | None

    @property
    def any(self) -> bool:
        encrypted = self.nik is not None or self.draft_nik is not None
        return bool(self.stored) or encrypted or bool(self.payloads)


async def keyed_data_present(connection: AsyncConnection) -> bool:
    """True when anything in the database needs the key it was made with."""
    return (await _samples(connection)).any


async def verify(connection: AsyncConnection, cipher: NikCipher) -> Verdict:
    """Check `cipher` against the database; raise KeyMismatch when it is not its key.

    Read-only; tables an older schema lacks count as empty.
    """
    samples = await _samples(connection)
    if samples.stored:
        ring = {fingerprint: kcv for fingerprint, kcv in cipher.fingerprints().values()}
        missing = tuple(key_id for key_id, kcv in samples.stored if ring.get(key_id) != kcv)
        if not missing:
            stored = {key_id for key_id, _ in samples.stored}
            return Verdict.KNOWN if ring.keys() <= stored else Verdict.ADDED
        raise KeyMismatch(given=cipher.key_id, expected=missing)
    if not samples.any:
        return Verdict.EMPTY
    try:
        if samples.nik is not None:
            cipher.decrypt(samples.nik)
        for payload in samples.payloads:
            cipher.decrypt_payload(payload)
        if samples.draft_nik is not None:
            cipher.decrypt(samples.draft_nik)
    except (InvalidTag, ValueError) as exc:
        raise KeyMismatch(given=cipher.key_id, expected=()) from exc
    return Verdict.DECRYPTS


async def confirm(connection: AsyncConnection, cipher: NikCipher, *, now: datetime) -> Verdict:
    """`verify`, then store the key's check value if none is stored; in the caller's transaction.

    On PostgreSQL the table is locked first, so two processes starting on a
    new database with different keys cannot both store theirs (SQLite's
    BEGIN IMMEDIATE already serialises them).
    """
    if connection.dialect.name == "postgresql":
        await connection.exec_driver_sql("LOCK TABLE key_check IN SHARE ROW EXCLUSIVE MODE")
    verdict = await verify(connection, cipher)
    if verdict is not Verdict.KNOWN:
        for fingerprint, kcv in cipher.fingerprints().values():
            await connection.execute(
                insert_for(connection.dialect.name)(KeyCheck)
                .values(key_id=fingerprint, kcv=kcv, created_at=now)
                .on_conflict_do_nothing()
            )
    return verdict


async def forget(connection: AsyncConnection, fingerprint: str) -> None:
    """Remove a retired key's id and check value, in the caller's transaction."""
    await connection.execute(delete(KeyCheck).where(KeyCheck.key_id == fingerprint))


async def has_table(connection: AsyncConnection) -> bool:
    """True when the schema has `key_check` (migrated to 0007 or later)."""
    return KeyCheck.__tablename__ in await connection.run_sync(_table_names)


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _samples(connection: AsyncConnection) -> _Samples:
    tables = await connection.run_sync(_table_names)
    stored: tuple[tuple[str, bytes], ...] = ()
    if KeyCheck.__tablename__ in tables:
        rows = await connection.execute(
            select(KeyCheck.key_id, KeyCheck.kcv).order_by(KeyCheck.created_at)
        )
        stored = tuple((str(key_id), bytes(kcv)) for key_id, kcv in rows)
    nik = None
    if Worker.__tablename__ in tables:
        # An erased worker's NIK is overwritten with nothing: not a ciphertext.
        nik = await connection.scalar(
            select(Worker.nik_ciphertext)
            .where(Worker.erased_at.is_(None), Worker.nik_ciphertext != b"")
            .limit(1)
        )
    payloads = []
    for table in (FailedUpdate, WhatsappInbound):
        if table.__tablename__ in tables:
            payload = await connection.scalar(select(table.payload_ciphertext).limit(1))
            if payload is not None:
                payloads.append(bytes(payload))
    draft_nik = None
    if Conversation.__tablename__ in tables:
        draft_nik = await _draft_nik(connection)
    return _Samples(
        stored=stored,
        nik=None if nik is None else bytes(nik),
        payloads=tuple(payloads),
        draft_nik=draft_nik,
    )


async def _draft_nik(connection: AsyncConnection) -> bytes | None:
    """A NIK ciphertext kept in a conversation's answers or parked draft, if any."""
    pattern = f'%"{_DRAFT_NIK}"%'
    rows = await connection.execute(
        select(Conversation.data, Conversation.draft)
        .where(
            or_(
                cast(Conversation.data, Text).like(pattern),
                cast(Conversation.draft, Text).like(pattern),
            )
        )
        .limit(1)
    )
    for data, draft in rows:
        for value in (*_values(data), *_values(draft)):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
    return None


def _values(document: Any) -> Iterator[str]:
    """Every string stored under the draft NIK key, at any depth of a JSON document."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key == _DRAFT_NIK and isinstance(value, str):
                yield value
            else:
                yield from _values(value)
    elif isinstance(document, list):
        for value in document:
            yield from _values(value)
