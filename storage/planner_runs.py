"""One planner across processes: a lease row per planning run, and the record of every attempt.

A run is a job ("dues_reminders", "pic_digest", "housekeeping") and a run key
(the local date). `acquire` starts an attempt only when the run is neither
done nor held: on PostgreSQL under a transaction-scoped advisory lock on
(job, run key), so two processes deciding at the same tick are serialised
(SQLite: BEGIN IMMEDIATE does the same); a partial unique index keeps one
`running` attempt per run whatever happens. The attempt holds a lease until
`lease_until`, renewed (`renew`) inside each page's transaction: a page
commits only while its attempt still holds the lease. An attempt whose lease
ran out (its process died, or hung) is marked `abandoned` by the next
`acquire`, which starts a new one; the planners' rows are idempotent by their
dedupe keys, so what the dead attempt committed is skipped, not repeated.

Every attempt stays as a row (who, start, end, pages, rows, outcome): "the
planner ran once per tick" is a query (`recent`, `sertakan plan status`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import zlib
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.models import PlannerRun

RUNNING = "running"
DONE = "done"
FAILED = "failed"
ABANDONED = "abandoned"


class LeaseLost(RuntimeError):
    """The attempt no longer holds its run (its lease ran out and another took over)."""


@dataclasses.dataclass(slots=True, frozen=True)
class Lease:
    """One attempt's hold on one run (picklable: a planner in a child process renews it)."""

    run_id: int
    job: str
    run_key: str
    owner: str
    lease_s: float


@dataclasses.dataclass(slots=True, frozen=True)
class RunRecord:
    """One attempt as `recent` reads it."""

    run_id: int
    job: str
    run_key: str
    owner: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    lease_until: datetime
    chunks: int
    rows: int
    error: str | None


def owner_id() -> str:
    """This process's name in the record: host, pid and a random part (pids get reused)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


def _lock_key(job: str, run_key: str) -> int:
    """A stable signed 64-bit advisory lock key for (job, run key)."""
    digest = zlib.crc32(f"sertakan-planner:{job}:{run_key}".encode())
    # A fixed high half keeps our keys apart from other users of advisory locks.
    return (0x5E27 << 32) | digest


async def acquire(
    database: AsyncEngine,
    *,
    job: str,
    run_key: str,
    owner: str,
    now: datetime,
    lease_s: float,
    again: bool = False,
) -> Lease | None:
    """Start an attempt at (job, run key); None when it is held, or done (unless `again`).

    A `running` attempt whose lease ended before `now` is marked `abandoned`
    first. `again` (the operator's `sertakan plan run`) starts an attempt even
    when the run is done; it still never runs beside a live attempt.
    """
    async with database.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(job, run_key)}
            )
        await connection.execute(
            update(PlannerRun)
            .where(
                PlannerRun.job == job,
                PlannerRun.run_key == run_key,
                PlannerRun.status == RUNNING,
                PlannerRun.lease_until < now,
            )
            .values(status=ABANDONED, error="lease ran out")
        )
        statuses = set(
            (
                await connection.execute(
                    select(PlannerRun.status)
                    .where(
                        PlannerRun.job == job,
                        PlannerRun.run_key == run_key,
                        PlannerRun.status.in_((RUNNING, DONE)),
                    )
                    .distinct()
                )
            ).scalars()
        )
        if RUNNING in statuses or (DONE in statuses and not again):
            return None
        run_id = (
            await connection.execute(
                insert(PlannerRun)
                .values(
                    job=job,
                    run_key=run_key,
                    owner=owner,
                    status=RUNNING,
                    started_at=now,
                    lease_until=now + timedelta(seconds=lease_s),
                    chunks=0,
                    rows=0,
                )
                .returning(PlannerRun.id)
            )
        ).scalar_one()
    return Lease(run_id, job, run_key, owner, lease_s)


async def renew(
    connection: AsyncConnection, lease: Lease, *, now: datetime, chunks: int, rows: int
) -> None:
    """Extend the lease and record progress, in the caller's (a page's) transaction.

    Raises `LeaseLost` when the attempt is no longer the running one: the
    caller's transaction then rolls back, so a page of an attempt that lost
    its run is never committed.
    """
    result = await connection.execute(
        update(PlannerRun)
        .where(
            PlannerRun.id == lease.run_id,
            PlannerRun.owner == lease.owner,
            PlannerRun.status == RUNNING,
        )
        .values(lease_until=now + timedelta(seconds=lease.lease_s), chunks=chunks, rows=rows)
    )
    if result.rowcount != 1:
        raise LeaseLost(f"{lease.job} {lease.run_key}: attempt {lease.run_id} lost its lease")


async def finish(
    database: AsyncEngine,
    lease: Lease,
    *,
    now: datetime,
    rows: int | None = None,
    error: str | None = None,
) -> bool:
    """Record the attempt's end: done (`error` None) or failed. False if it had lost its run."""
    values: dict[str, object] = {
        "status": DONE if error is None else FAILED,
        "finished_at": now,
        "error": error,
    }
    if rows is not None:
        values["rows"] = rows
    async with database.begin() as connection:
        result = await connection.execute(
            update(PlannerRun)
            .where(
                PlannerRun.id == lease.run_id,
                PlannerRun.owner == lease.owner,
                PlannerRun.status == RUNNING,
            )
            .values(**values)
        )
    return result.rowcount == 1


async def recent(
    database: AsyncEngine, *, limit: int = 20, job: str | None = None
) -> list[RunRecord]:
    """The newest attempts first (all jobs, or one)."""
    statement = select(
        PlannerRun.id,
        PlannerRun.job,
        PlannerRun.run_key,
        PlannerRun.owner,
        PlannerRun.status,
        PlannerRun.started_at,
        PlannerRun.finished_at,
        PlannerRun.lease_until,
        PlannerRun.chunks,
        PlannerRun.rows,
        PlannerRun.error,
    ).order_by(PlannerRun.id.desc())
    if job is not None:
        statement = statement.where(PlannerRun.job == job)
    async with database.connect() as connection:
        rows = (await connection.execute(statement.limit(limit))).tuples().all()
    return [RunRecord(*row) for row in rows]


async def done_count(database: AsyncEngine, *, job: str, run_key: str) -> int:
    """How many attempts at (job, run key) finished (1 when the run ran once)."""
    async with database.connect() as connection:
        return int(
            (
                await connection.execute(
                    select(func.count()).where(
                        PlannerRun.job == job,
                        PlannerRun.run_key == run_key,
                        PlannerRun.status == DONE,
                    )
                )
            ).scalar_one()
        )
