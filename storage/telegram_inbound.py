"""The Telegram inbound journal: updates confirmed to Telegram before they were handled.

Long polling confirms updates by asking for the next ones (`getUpdates` with a
higher offset), so an update is out of Telegram's hands once the following
fetch starts. Confirming only after a batch was handled makes the next fetch
wait for the batch's slowest person. Instead the poller records a batch here
(`record`, one INSERT ... ON CONFLICT (update_id) DO NOTHING, in a short
transaction of its own) and then fetches again at once; the updates are handled
from memory, per person in order, and `forget` deletes their rows once handled.
What a crash leaves here is read back by `pending` at the next start and
handled before anything new. A row deleted after its step committed but whose
update comes back (the offset's confirmation lost in the crash) is a replay the
engine's `processed_update` claim turns into a no-op.

One reader: long polling has a single consumer per bot (bot/workers.py), so
there are no claims or leases (compare storage/whatsapp_inbound.py, read by
every process). The payload (the update's JSON) may hold a NIK: encrypted.

No commit happens here: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy import LargeBinary, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.crypto import NikCipher
from storage.inbound_journal import insert_new, row_params
from storage.models import TelegramInbound, UtcDateTime

_PER_ROW: Final = (("update_id", None), ("payload_ciphertext", LargeBinary))
_SHARED: Final = (("received_at", UtcDateTime),)


@dataclasses.dataclass(slots=True, frozen=True)
class JournaledUpdate:
    """One update as recorded: Telegram's id and its JSON (plain text once read back)."""

    update_id: int
    payload: str


async def record(
    connection: AsyncConnection,
    updates: Sequence[JournaledUpdate],
    *,
    cipher: NikCipher,
    now: datetime,
) -> set[int]:
    """Store `updates` in the caller's transaction; return the ids newly recorded.

    An id already here (Telegram delivering an unconfirmed update again while
    its row waits) is left alone and not returned.
    """
    unique = {update.update_id: update for update in reversed(updates)}
    if not unique:
        return set()
    params = row_params(
        [
            {"update_id": u.update_id, "payload_ciphertext": cipher.encrypt_payload(u.payload)}
            for u in unique.values()
        ]
    )
    params["received_at"] = now
    statement = insert_new("telegram_inbound", "update_id", _PER_ROW, _SHARED, len(unique))
    result = await connection.execute(statement, params)
    return {int(update_id) for update_id in result.scalars()}


async def pending(connection: AsyncConnection, *, cipher: NikCipher) -> list[JournaledUpdate]:
    """Every update still here, decrypted, in Telegram's order (update_id)."""
    rows = await connection.execute(
        select(TelegramInbound.update_id, TelegramInbound.payload_ciphertext).order_by(
            TelegramInbound.update_id
        )
    )
    return [
        JournaledUpdate(update_id, cipher.decrypt_payload(ciphertext))
        for update_id, ciphertext in rows
    ]


async def forget(connection: AsyncConnection, update_ids: Sequence[int]) -> int:
    """Delete the rows of handled (or parked) updates; returns how many were there."""
    if not update_ids:
        return 0
    result = await connection.execute(
        delete(TelegramInbound).where(TelegramInbound.update_id.in_(list(update_ids)))
    )
    return result.rowcount
