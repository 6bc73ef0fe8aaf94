"""Roles bound to a chat account and appointed from the command line: administrators
(`sertakan admin`) and program leaders (`sertakan leader`). One shape serves both:
at most one current appointment per account (a partial unique index), the row
kept when it ends (`removed_at`), each change audited as "<audit name>.appoint" or
"<audit name>.remove". (A PIC's appointment is bound to an OPD too: storage/roles.py.)

Every function works on the caller's connection and never commits.
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel
from storage import audit
from storage.audit import Actor
from storage.models import Administrator, ProgramLeader
from storage.roles import RoleError, _account_id


@dataclasses.dataclass(frozen=True, slots=True)
class AccountRole:
    """One kind of account-bound appointment: its table and how it is named."""

    #: The table of `storage.models` (id, channel_account_id, appointed_by/at, removed_by/at).
    table: Table
    #: The audit actions' prefix ("admin" -> "admin.appoint", "admin.remove").
    audit_name: str
    #: The audit entries' record type (the table's name).
    record_type: str
    #: How the command line names one ("administrator").
    label: str


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


ADMINISTRATOR = AccountRole(_table(Administrator), "admin", "administrator", "administrator")
PROGRAM_LEADER = AccountRole(_table(ProgramLeader), "leader", "program_leader", "program leader")


async def current_appointment(
    connection: AsyncConnection, role: AccountRole, account_id: int
) -> int | None:
    """The account's current appointment to `role`, if any."""
    value = await connection.scalar(_current_of(role), {"account_id": account_id})
    return int(value) if value is not None else None


@functools.cache
def _current_of(role: AccountRole) -> Select[tuple[int]]:
    """`current_appointment`'s statement, built once per role (building it per call cost
    more than running it)."""
    columns = role.table.c
    return select(columns.id).where(
        columns.channel_account_id == bindparam("account_id"), columns.removed_at.is_(None)
    )


async def appoint(
    connection: AsyncConnection,
    role: AccountRole,
    *,
    channel: Channel,
    external_id: str,
    actor: Actor,
    now: datetime,
) -> tuple[int, bool]:
    """Appoint the chat account to `role`; (its appointment id, whether new). The account
    row is created if the person never wrote yet (a WhatsApp account's id is the number
    without "+"). Appointing a current holder again changes nothing. Raises RoleError
    when another appointment of the account won a race."""
    account_id = await _account_id(connection, channel, external_id, now=now)
    current = await current_appointment(connection, role, account_id)
    if current is not None:
        return current, False
    try:
        async with connection.begin_nested():
            result = await connection.execute(
                insert(role.table).values(
                    channel_account_id=account_id, appointed_by=str(actor), appointed_at=now
                )
            )
    except IntegrityError:
        raise RoleError(
            f"the account was appointed by somebody else at the same time; list the "
            f"{role.label}s and try again"
        ) from None
    key = result.inserted_primary_key
    assert key is not None
    appointment_id = int(key[0])
    await audit.record(
        connection,
        actor,
        f"{role.audit_name}.appoint",
        record_type=role.record_type,
        record_id=appointment_id,
        opd_id=None,
        now=now,
        details={"channel": channel.value, "external_id": external_id},
    )
    return appointment_id, True


async def end_appointment(
    connection: AsyncConnection,
    role: AccountRole,
    *,
    appointment_id: int,
    actor: Actor,
    now: datetime,
) -> None:
    """End the appointment (the row stays); audited as "<audit name>.remove". Raises
    RoleError when there is no such current appointment."""
    columns = role.table.c
    result = await connection.execute(
        update(role.table)
        .where(columns.id == appointment_id, columns.removed_at.is_(None))
        .values(removed_at=now, removed_by=str(actor))
    )
    if not result.rowcount:
        raise RoleError(f"there is no current {role.label} with id {appointment_id}")
    await audit.record(
        connection,
        actor,
        f"{role.audit_name}.remove",
        record_type=role.record_type,
        record_id=appointment_id,
        opd_id=None,
        now=now,
    )
