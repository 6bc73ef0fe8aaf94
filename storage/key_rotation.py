"""Re-encrypting every stored ciphertext under the ring's current key (issue 14).

`sertakan key rotate` adds a key to the ring (`storage.crypto.KeyRing`) and
then calls `reencrypt`; `sertakan key retire` calls `census` and refuses while
a row still needs the key. What holds a ciphertext:

- `worker.nik_ciphertext` (an erased worker's empty value is no ciphertext);
- the payloads of `failed_update`, `pending_reply` and `whatsapp_inbound`;
- a conversation's answers and parked draft (`nik_enc`, base64, at any depth).

Rows are read in primary-key order, `batch_size` at a time, each batch
written in its own short transaction while the bot runs. A row is only
replaced if it still holds the ciphertext read (a conversation: the same
`version`), so a row the bot changed meanwhile is left to the next pass. The
lookup hashes are not touched: the blind-index key stays across rotations.
Re-running is harmless: rows already under the current key are only read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import Row, Text, bindparam, cast, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from storage.crypto import NikCipher
from storage.models import Conversation, FailedUpdate, PendingReply, WhatsappInbound, Worker

#: The draft key under which flows keep a NIK's ciphertext (as in `storage.key_check`).
_DRAFT_NIK = "nik_enc"
#: A key id for ciphertexts no key of the ring opens (in `census`).
UNREADABLE = 0

Progress = Callable[[str], None]


@dataclasses.dataclass(slots=True, frozen=True)
class _Column:
    """One table's ciphertext column."""

    name: str
    id: InstrumentedAttribute[int]
    blob: InstrumentedAttribute[bytes]
    #: A NIK (`NikCipher.encrypt`) rather than a payload (`encrypt_payload`).
    nik: bool


_COLUMNS = (
    _Column("worker", Worker.id, Worker.nik_ciphertext, nik=True),
    _Column("failed_update", FailedUpdate.id, FailedUpdate.payload_ciphertext, nik=False),
    _Column("pending_reply", PendingReply.id, PendingReply.payload_ciphertext, nik=False),
    _Column("whatsapp_inbound", WhatsappInbound.id, WhatsappInbound.payload_ciphertext, nik=False),
)
CONVERSATION = "conversation"
#: Every kind of row `reencrypt` and `census` visit, in their order.
TABLES = (*(column.name for column in _COLUMNS), CONVERSATION)


@dataclasses.dataclass(slots=True)
class PassResult:
    """One pass of `reencrypt`: rows read and rows rewritten, by table."""

    checked: Counter[str] = dataclasses.field(default_factory=Counter)
    rewritten: Counter[str] = dataclasses.field(default_factory=Counter)


def _quiet(_: str) -> None:
    """No progress lines."""


async def reencrypt(
    db: AsyncEngine,
    cipher: NikCipher,
    *,
    batch_size: int = 500,
    pause_s: float = 0.0,
    progress: Progress = _quiet,
) -> PassResult:
    """One pass over every ciphertext: those under an older key are rewritten under the current.

    Waits `pause_s` after each batch (lighter on a busy database). Raises
    InvalidTag when a ciphertext needs a key the ring lacks.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    result = PassResult()
    for column in _COLUMNS:
        await _reencrypt_column(db, cipher, column, (batch_size, pause_s), result, progress)
    await _reencrypt_conversations(db, cipher, (batch_size, pause_s), result, progress)
    return result


async def census(db: AsyncEngine, cipher: NikCipher, *, batch_size: int = 2000) -> Counter[int]:
    """How many stored ciphertexts each ring key made (`UNREADABLE`: none of them)."""
    counts: Counter[int] = Counter()
    for column in _COLUMNS:
        async for rows in _column_batches(db, column, batch_size):
            counts.update(_key_of(cipher, blob, nik=column.nik) for _, blob in rows)
    async for conversations in _conversation_batches(db, batch_size):
        for row in conversations:
            for value in (*_draft_niks(row.data), *_draft_niks(row.draft)):
                try:
                    blob = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    continue
                counts[_key_of(cipher, blob, nik=True)] += 1
    return counts


def _key_of(cipher: NikCipher, blob: bytes, *, nik: bool) -> int:
    try:
        return cipher.nik_key(blob) if nik else cipher.payload_key(blob)
    except (InvalidTag, ValueError):
        return UNREADABLE


async def _column_batches(
    db: AsyncEngine, column: _Column, batch_size: int
) -> AsyncIterator[list[tuple[int, bytes]]]:
    """The column's ciphertexts, `batch_size` rows at a time in id order (each read apart)."""
    last = 0
    while True:
        async with db.connect() as connection:
            rows = [
                (int(row_id), bytes(blob))
                for row_id, blob in await connection.execute(
                    select(column.id, column.blob)
                    .where(column.id > last, column.blob != b"")
                    .order_by(column.id)
                    .limit(batch_size)
                )
            ]
        if not rows:
            return
        yield rows
        last = rows[-1][0]


async def _reencrypt_column(
    db: AsyncEngine,
    cipher: NikCipher,
    column: _Column,
    pacing: tuple[int, float],
    result: PassResult,
    progress: Progress,
) -> None:
    batch_size, pause_s = pacing
    table = column.id.class_.__table__
    async for rows in _column_batches(db, column, batch_size):
        changes = []
        for row_id, old in rows:
            new = cipher.reencrypt(old) if column.nik else cipher.reencrypt_payload(old)
            if new is not None:
                changes.append((row_id, old, new))
        rewritten = 0
        if changes:
            async with db.begin() as connection:
                await connection.execute(
                    update(table)
                    .where(column.id == bindparam("row_id"), column.blob == bindparam("old"))
                    .values({column.blob.key: bindparam("new")}),
                    [{"row_id": row_id, "old": old, "new": new} for row_id, old, new in changes],
                )
                # Not the drivers' rowcount (asyncpg has none for executemany): the new
                # ciphertexts are unique, so those found are the rows replaced.
                rewritten = int(
                    await connection.scalar(
                        select(func.count())
                        .select_from(table)
                        .where(
                            column.id.in_([row_id for row_id, _, _ in changes]),
                            column.blob.in_([new for _, _, new in changes]),
                        )
                    )
                    or 0
                )
        result.checked[column.name] += len(rows)
        result.rewritten[column.name] += rewritten
        progress(
            f"{column.name}: {result.checked[column.name]} checked, "
            f"{result.rewritten[column.name]} re-encrypted"
        )
        await asyncio.sleep(pause_s)


async def _conversation_batches(db: AsyncEngine, batch_size: int) -> AsyncIterator[list[Row[Any]]]:
    """Conversations holding a draft NIK, `batch_size` at a time in id order."""
    pattern = f'%"{_DRAFT_NIK}"%'
    last = 0
    while True:
        async with db.connect() as connection:
            rows = list(
                await connection.execute(
                    select(
                        Conversation.id, Conversation.version, Conversation.data, Conversation.draft
                    )
                    .where(
                        Conversation.id > last,
                        or_(
                            cast(Conversation.data, Text).like(pattern),
                            cast(Conversation.draft, Text).like(pattern),
                        ),
                    )
                    .order_by(Conversation.id)
                    .limit(batch_size)
                )
            )
        if not rows:
            return
        yield rows
        last = int(rows[-1].id)


async def _reencrypt_conversations(
    db: AsyncEngine,
    cipher: NikCipher,
    pacing: tuple[int, float],
    result: PassResult,
    progress: Progress,
) -> None:
    batch_size, pause_s = pacing
    async for rows in _conversation_batches(db, batch_size):
        changes = []
        for row in rows:
            data, data_changed = _rewrite(row.data, cipher)
            draft, draft_changed = _rewrite(row.draft, cipher)
            if data_changed or draft_changed:
                changes.append((int(row.id), int(row.version), data, draft))
        rewritten = 0
        if changes:
            async with db.begin() as connection:
                for conversation_id, version, data, draft in changes:
                    outcome = await connection.execute(
                        update(Conversation)
                        .where(Conversation.id == conversation_id, Conversation.version == version)
                        .values(data=data, draft=draft)
                    )
                    rewritten += outcome.rowcount
        result.checked[CONVERSATION] += len(rows)
        result.rewritten[CONVERSATION] += rewritten
        progress(
            f"{CONVERSATION}: {result.checked[CONVERSATION]} checked, "
            f"{result.rewritten[CONVERSATION]} re-encrypted"
        )
        await asyncio.sleep(pause_s)


def _rewrite(document: Any, cipher: NikCipher) -> tuple[Any, bool]:
    """`document` with every draft NIK under the current key, and whether one changed."""
    if isinstance(document, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, value in document.items():
            if key == _DRAFT_NIK and isinstance(value, str):
                new = _rewrite_value(value, cipher)
                changed |= new is not None
                out[key] = value if new is None else new
            else:
                out[key], inner = _rewrite(value, cipher)
                changed |= inner
        return out, changed
    if isinstance(document, list):
        items = [_rewrite(value, cipher) for value in document]
        return [value for value, _ in items], any(inner for _, inner in items)
    return document, False


def _rewrite_value(value: str, cipher: NikCipher) -> str | None:
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    new = cipher.reencrypt(blob)
    return None if new is None else base64.b64encode(new).decode("ascii")


def _draft_niks(document: Any) -> list[str]:
    if isinstance(document, dict):
        found = []
        for key, value in document.items():
            if key == _DRAFT_NIK and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_draft_niks(value))
        return found
    if isinstance(document, list):
        return [value for item in document for value in _draft_niks(item)]
    return []
