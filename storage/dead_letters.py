"""Inbound updates parked after repeated failures (the dead letters).

A channel hands an update over here when the engine failed on it several
times, so one broken update cannot stall everyone behind it; the payload is
kept (encrypted) for operators, never dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from storage.crypto import NikCipher
from storage.db import insert_for
from storage.models import FailedUpdate


@dataclasses.dataclass(slots=True, frozen=True)
class ParkedUpdate:
    """A parked update as operators see it (no payload)."""

    id: int
    channel: Channel
    update_id: str
    sender_id: str | None
    error_type: str
    attempts: int
    failed_at: datetime


class DeadLetters:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], cipher: NikCipher) -> None:
        self._sessionmaker = sessionmaker
        self._cipher = cipher

    async def park(
        self,
        *,
        channel: Channel,
        update_id: str,
        sender_id: str | None,
        payload: str,
        error_type: str,
        attempts: int,
        now: datetime,
    ) -> None:
        """Store the update durably (once per channel and update id); raises if it cannot."""
        async with self._sessionmaker() as session, session.begin():
            insert = insert_for(session.get_bind().dialect.name)
            await session.execute(
                insert(FailedUpdate)
                .values(
                    channel=channel,
                    update_id=update_id,
                    sender_id=sender_id,
                    payload_ciphertext=self._cipher.encrypt_payload(payload),
                    error_type=error_type,
                    attempts=attempts,
                    failed_at=now,
                )
                .on_conflict_do_nothing(index_elements=["channel", "update_id"])
            )

    async def list(self, *, limit: int = 100) -> Sequence[ParkedUpdate]:
        """The most recent parked updates, newest first."""
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(FailedUpdate).order_by(FailedUpdate.failed_at.desc()).limit(limit)
                )
            ).scalars()
            return [
                ParkedUpdate(
                    id=row.id,
                    channel=row.channel,
                    update_id=row.update_id,
                    sender_id=row.sender_id,
                    error_type=row.error_type,
                    attempts=row.attempts,
                    failed_at=row.failed_at,
                )
                for row in rows
            ]

    async def payload(self, parked_id: int) -> str | None:
        """The decrypted payload of one parked update, for replay by an operator."""
        async with self._sessionmaker() as session:
            row = await session.get(FailedUpdate, parked_id)
        return self._cipher.decrypt_payload(row.payload_ciphertext) if row else None
