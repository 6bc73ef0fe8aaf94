"""The audit log (PRODUCT 7): every PIC and administrator action, who, what, which
record, when. Written in the transaction of the action itself, so an action
and its audit entry exist together or not at all. Details never hold a NIK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.models import AuditLog

_INSERT = insert(AuditLog)


@dataclasses.dataclass(slots=True, frozen=True)
class Actor:
    """Who acted: a PIC (by pic id), an administrator (login name), an ASN or worker."""

    type: str
    id: str

    @classmethod
    def pic(cls, pic_id: int) -> Actor:
        return cls("pic", str(pic_id))

    @classmethod
    def admin(cls, name: str) -> Actor:
        return cls("admin", name)

    @classmethod
    def account(cls, kind: str, account_id: int) -> Actor:
        return cls(kind, str(account_id))

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


async def record(
    connection: AsyncConnection,
    actor: Actor,
    action: str,
    *,
    record_type: str,
    record_id: int | str | None,
    opd_id: int | None,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one audit entry in the caller's transaction."""
    await connection.execute(
        _INSERT,
        {
            "at": now,
            "actor_type": actor.type,
            "actor": actor.id,
            "action": action,
            "record_type": record_type,
            "record_id": None if record_id is None else str(record_id),
            "opd_id": opd_id,
            "details": details or {},
        },
    )


#: The action of a collective file (full NIKs) leaving the system.
NIK_FILE_RELEASED = "batch.download"
#: The channel named for a file written by `sertakan export`.
CLI_CHANNEL = "cli"


async def nik_file_released(
    connection: AsyncConnection,
    actor: Actor,
    *,
    batch_id: int,
    batch_number: str,
    opd_id: int,
    rows: int,
    channel: str,
    now: datetime,
) -> None:
    """Audit a batch's collective file, which holds full NIKs, handed out.

    Who, which batch, how many rows, and where it went (a chat channel, or
    "cli"); every download counts, the first export and each one after it.
    """
    await record(
        connection,
        actor,
        NIK_FILE_RELEASED,
        record_type="submission_batch",
        record_id=batch_id,
        opd_id=opd_id,
        now=now,
        details={"batch": batch_number, "rows": rows, "channel": channel},
    )


@dataclasses.dataclass(slots=True, frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor_type: str
    actor: str
    action: str
    record_type: str
    record_id: str | None
    opd_id: int | None
    details: dict[str, Any]


async def recent(
    connection: AsyncConnection, *, limit: int = 50, opd_id: int | None = None
) -> Sequence[AuditEntry]:
    """The newest entries first (for `sertakan audit list`)."""
    table = AuditLog.__table__
    statement = select(table).order_by(table.c.id.desc()).limit(limit)
    if opd_id is not None:
        statement = statement.where(table.c.opd_id == opd_id)
    rows = await connection.execute(statement)
    return [AuditEntry(**row._mapping) for row in rows]


async def latest_details(
    connection: AsyncConnection, action: str, *, record_type: str, record_id: int, opd_id: int
) -> dict[str, Any] | None:
    """The details of the newest `action` entry about one record of an OPD, if any
    (what the ASN changed in their latest correction, for the PIC's review)."""
    table = AuditLog.__table__
    statement = (
        select(table.c.details)
        .where(
            table.c.opd_id == opd_id,
            table.c.action == action,
            table.c.record_type == record_type,
            table.c.record_id == str(record_id),
        )
        .order_by(table.c.id.desc())
        .limit(1)
    )
    details = (await connection.execute(statement)).scalar_one_or_none()
    return dict(details) if details is not None else None
