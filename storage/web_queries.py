"""Read-only queries of the web workbench's tables and filters (issue 13).

State changes never happen here: the pages call `storage.workbench`,
`storage.payments`, `storage.outbox` and `storage.audit` like the chat does.
These are the lists the chat has no screen for (a filtered, paged queue; the
audit log searched; the outbox's oldest due row) and the audited NIK "show".
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import OutboxStatus, SponsorshipStatus, WorkerConsent
from storage import audit
from storage.audit import Actor, AuditEntry
from storage.crypto import NikCipher
from storage.models import AuditLog, Outbox, Sponsorship, Worker
from storage.workbench import Enrollment, _enrollments


@dataclasses.dataclass(slots=True, frozen=True)
class QueueFilter:
    """What the PIC narrowed the queue to: a part of the worker's or sponsor's name,
    and the worker's consent (None: any)."""

    name: str = ""
    consent: WorkerConsent | None = None


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclasses.dataclass(slots=True, frozen=True)
class QueueCursor:
    """A place in the queue's order (the enrollment's last status change, then its id): a
    page starts after (or ends before) it, whatever was decided meanwhile."""

    changed_at: datetime
    sponsorship_id: int

    def token(self) -> str:
        """The cursor as it travels in a link ("<microseconds since 2000>.<id>")."""
        return f"{(self.changed_at - _EPOCH) // _MICROSECOND}.{self.sponsorship_id}"

    @classmethod
    def parse(cls, text: str) -> QueueCursor | None:
        """The cursor of `token()`; None for anything else (the page starts at the top)."""
        micros, dot, sid = text.partition(".")
        if not dot or len(text) > 40:
            return None
        try:
            moment, number = int(micros), int(sid)
            # An id the column cannot hold would be a database error, not an empty page.
            valid = 0 < number < 2**31
            return cls(_EPOCH + moment * _MICROSECOND, number) if valid else None
        except (ValueError, OverflowError):
            return None


@dataclasses.dataclass(slots=True, frozen=True)
class QueuePage:
    """One page of the queue, how many match the filter, and the cursors of the pages
    before and after it (None: there is none)."""

    items: list[Enrollment]
    total: int
    before: QueueCursor | None
    after: QueueCursor | None


async def queue_page(
    connection: AsyncConnection,
    *,
    opd_id: int,
    where: QueueFilter,
    limit: int,
    after: QueueCursor | None = None,
    before: QueueCursor | None = None,
) -> QueuePage:
    """One page of the OPD's enrollments waiting for the PIC, oldest first (the chat's
    order), with keyset paging: the `limit` after `after`, or the `limit` before
    `before`, or the first ones. A page never skips or repeats an enrollment because
    others were decided meanwhile (as OFFSET paging would), and a deep page costs what
    the first does."""
    condition = and_(
        Sponsorship.opd_id == opd_id, Sponsorship.status == SponsorshipStatus.WAITING_FOR_PIC
    )
    if where.consent is not None:
        condition = and_(condition, Sponsorship.worker_consent == where.consent)
    if where.name:
        condition = and_(
            condition,
            func.lower(Worker.full_name).contains(where.name.casefold(), autoescape=True),
        )
    total = int(
        await connection.scalar(
            select(func.count())
            .select_from(Sponsorship)
            .join(Worker, Worker.id == Sponsorship.worker_id)
            .where(condition)
        )
        or 0
    )
    changed, sid = Sponsorship.status_changed_at, Sponsorship.id
    query = _enrollments().add_columns(changed).where(condition)
    if before is not None:
        earlier = or_(
            changed < before.changed_at,
            and_(changed == before.changed_at, sid < before.sponsorship_id),
        )
        rows = list(
            await connection.execute(
                query.where(earlier).order_by(changed.desc(), sid.desc()).limit(limit + 1)
            )
        )
        if len(rows) > limit:
            rows = rows[:limit][::-1]
            return _queue_page(rows, total, more_before=True, more_after=True)
        # Back at the top: the first page, full even if rows went meanwhile.
    elif after is not None:
        later = or_(
            changed > after.changed_at,
            and_(changed == after.changed_at, sid > after.sponsorship_id),
        )
        rows = list(
            await connection.execute(query.where(later).order_by(changed, sid).limit(limit + 1))
        )
        if rows:
            return _queue_page(rows[:limit], total, more_before=True, more_after=len(rows) > limit)
        # Nothing after it any more (decided meanwhile): the first page.
    rows = list(await connection.execute(query.order_by(changed, sid).limit(limit + 1)))
    return _queue_page(rows[:limit], total, more_before=False, more_after=len(rows) > limit)


def _queue_page(rows: list[Any], total: int, *, more_before: bool, more_after: bool) -> QueuePage:
    items = [Enrollment(*row[:-1]) for row in rows]
    keys = [QueueCursor(row[-1], int(row[0])) for row in rows]
    return QueuePage(
        items,
        total,
        before=keys[0] if more_before and keys else None,
        after=keys[-1] if more_after and keys else None,
    )


async def show_nik(
    connection: AsyncConnection,
    cipher: NikCipher,
    *,
    opd_id: int,
    sponsorship_id: int,
    actor: Actor,
    now: datetime,
) -> str | None:
    """The full NIK of one of the OPD's enrollments, audited as "enrollment.show_nik"
    (who, which record; never the NIK). None when the enrollment is not the OPD's."""
    blob = await connection.scalar(
        select(Worker.nik_ciphertext)
        .join(Sponsorship, Sponsorship.worker_id == Worker.id)
        .where(Sponsorship.id == sponsorship_id, Sponsorship.opd_id == opd_id)
    )
    if blob is None:
        return None
    await audit.record(
        connection,
        actor,
        "enrollment.show_nik",
        record_type="sponsorship",
        record_id=sponsorship_id,
        opd_id=opd_id,
        now=now,
        details={"channel": "web"},
    )
    return cipher.decrypt(blob)


@dataclasses.dataclass(slots=True, frozen=True)
class AuditFilter:
    """Audit log search: actor ("pic:3" or "pic"), record ("sponsorship:12" or a type),
    action prefix ("enrollment."), local-date bounds already turned into UTC times."""

    actor: str = ""
    record: str = ""
    action: str = ""
    since: datetime | None = None
    until: datetime | None = None
    opd_id: int | None = None


async def audit_page(
    connection: AsyncConnection, *, where: AuditFilter, limit: int, offset: int
) -> tuple[list[AuditEntry], int]:
    """Newest first, one page, and how many entries match."""
    table = AuditLog.__table__
    conditions: list[Any] = []
    if where.opd_id is not None:
        conditions.append(table.c.opd_id == where.opd_id)
    if where.actor:
        kind, _, ident = where.actor.partition(":")
        conditions.append(table.c.actor_type == kind)
        if ident:
            conditions.append(table.c.actor == ident)
    if where.record:
        kind, _, ident = where.record.partition(":")
        conditions.append(table.c.record_type == kind)
        if ident:
            conditions.append(table.c.record_id == ident)
    if where.action:
        conditions.append(table.c.action.startswith(where.action, autoescape=True))
    if where.since is not None:
        conditions.append(table.c.at >= where.since)
    if where.until is not None:
        conditions.append(table.c.at < where.until)
    total = await connection.scalar(select(func.count()).select_from(table).where(*conditions))
    rows = await connection.execute(
        select(table).where(*conditions).order_by(table.c.id.desc()).offset(offset).limit(limit)
    )
    return [AuditEntry(**row._mapping) for row in rows], int(total or 0)


async def oldest_due(connection: AsyncConnection, *, now: datetime) -> datetime | None:
    """When the oldest pending notice that is due now became due (None: none waits)."""
    value = await connection.scalar(
        select(func.min(Outbox.not_before)).where(
            Outbox.status == OutboxStatus.PENDING, Outbox.not_before <= now
        )
    )
    if value is None:
        return None
    return value if isinstance(value, datetime) else None
