"""The PIC's work on an OPD's enrollments (PRODUCT 4.5), shared by the chat and the CLI.

Every function takes the caller's connection and transaction and never commits,
so a state change, its audit entry and the notices it causes are written
together or not at all. Every query is scoped by `opd_id`, which callers derive
from the PIC's appointment (storage.roles) or the administrator's command line,
never from what a chat user typed: a record of another OPD is simply not found.

The life of an enrollment here::

    waiting_for_pic --accept--> accepted --create_batch--> (in an exported batch)
         ^   |                                  --confirm_batch--> submitted
         |   +--return_enrollment--> returned               --apply_import--> active (KPJ)
         +------- resubmit (ASN) ------+                      --hand_over--> card_handed_over

Each status change is an event of `storage.sponsorship_state`, which owns the
transition table and the guarded statements; this module scopes them to the OPD
and turns a refused change into a ChangeProblem.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import (
    Integer,
    Row,
    Select,
    String,
    and_,
    column,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import values as sa_values
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.local_time import local_date
from domain.vocabulary import (
    BatchStatus,
    ConsentMethod,
    ImportStatus,
    Occupation,
    PaymentPlan,
    Relationship,
    ReturnReason,
    SponsorshipStatus,
    WorkerConsent,
)
from storage import audit
from storage import sponsorship_state as state
from storage.audit import Actor
from storage.models import (
    SPONSORSHIP_IS_OPEN,
    Asn,
    KpjImport,
    Opd,
    Sponsorship,
    SubmissionBatch,
    Worker,
)

if TYPE_CHECKING:
    from storage.collective import ImportPreview

#: Rows per statement when a batch or an import touches many sponsorships.
CHUNK = 1000


class NoticePlanner(Protocol):
    """Plans the proactive messages a change causes (handlers.notices implements it)."""

    async def enrollment_accepted(
        self, connection: AsyncConnection, sponsorship_id: int, *, now: datetime
    ) -> None: ...

    async def enrollment_returned(
        self, connection: AsyncConnection, sponsorship_id: int, *, now: datetime
    ) -> None: ...

    async def cards_ready(
        self, connection: AsyncConnection, sponsorship_ids: Sequence[int], *, now: datetime
    ) -> None: ...


@dataclasses.dataclass(slots=True, frozen=True)
class OpdSummary:
    counts: dict[SponsorshipStatus, int]
    asn_registered: int
    asn_sponsoring: int

    def count(self, *statuses: SponsorshipStatus) -> int:
        return sum(self.counts.get(status, 0) for status in statuses)


@dataclasses.dataclass(slots=True, frozen=True)
class Enrollment:
    """One enrollment as the PIC sees it (masked NIK only)."""

    id: int
    status: SponsorshipStatus
    worker_name: str
    nik_masked: str
    birth_date: date
    birth_date_differs_from_nik: bool
    sex: str
    phone_e164: str | None
    village: str
    district: str
    occupation: Occupation | None
    plan: PaymentPlan
    first_month: date
    worker_consent: WorkerConsent
    sponsor_name: str
    sponsor_nip: str
    correction_count: int
    return_reason: str | None
    kpj: str | None
    created_at: datetime
    relationship: Relationship
    occupation_text: str | None
    birth_place: str | None
    street_address: str | None
    regency: str | None
    #: How and when the worker was last asked to consent (None: never asked).
    consent_requested_via: ConsentMethod | None = None
    consent_requested_at: datetime | None = None
    #: How the worker's answer came.
    consent_method: ConsentMethod | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class BatchInfo:
    id: int
    number: str
    status: BatchStatus
    row_count: int
    created_at: datetime
    submitted_at: datetime | None


class ChangeProblem(Exception):
    """A PIC action that does not apply to the record as it is now (told to the PIC)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        #: "not_found", "wrong_status" or "no_consent" (accept without the worker's consent).
        self.reason = reason


_ENROLLMENT_COLUMNS = (
    Sponsorship.id,
    Sponsorship.status,
    Worker.full_name,
    Worker.nik_masked,
    Worker.birth_date,
    Sponsorship.birth_date_differs_from_nik,
    Worker.sex,
    Worker.phone_e164,
    Worker.village,
    Worker.district,
    Sponsorship.occupation,
    Sponsorship.plan,
    Sponsorship.first_month,
    Sponsorship.worker_consent,
    Asn.full_name,
    Asn.nip,
    Sponsorship.correction_count,
    Sponsorship.return_reason,
    Sponsorship.kpj,
    Sponsorship.created_at,
    Sponsorship.relationship_to_asn,
    Sponsorship.occupation_text,
    Worker.birth_place,
    Worker.street_address,
    Worker.regency,
    Sponsorship.consent_requested_via,
    Sponsorship.consent_requested_at,
    Sponsorship.consent_method,
)


def _enrollments() -> Select[Any]:
    return (
        select(*_ENROLLMENT_COLUMNS)
        .join(Worker, Worker.id == Sponsorship.worker_id)
        .join(Asn, Asn.id == Sponsorship.asn_id)
    )


async def opd_summary(connection: AsyncConnection, opd_id: int) -> OpdSummary:
    """Counts per status, and sponsoring ASN / registered ASN of the OPD."""
    rows = await connection.execute(
        select(Sponsorship.status, func.count())
        .where(Sponsorship.opd_id == opd_id)
        .group_by(Sponsorship.status)
    )
    counts = {SponsorshipStatus(status): int(n) for status, n in rows}
    registered = await connection.scalar(
        select(func.count()).select_from(Asn).where(Asn.opd_id == opd_id)
    )
    sponsoring = await connection.scalar(
        select(func.count(func.distinct(Sponsorship.asn_id))).where(
            Sponsorship.opd_id == opd_id, SPONSORSHIP_IS_OPEN
        )
    )
    return OpdSummary(counts, int(registered or 0), int(sponsoring or 0))


async def enrollment(
    connection: AsyncConnection, *, opd_id: int, sponsorship_id: int
) -> Enrollment | None:
    """One enrollment of the OPD; None when it does not exist or belongs to another OPD."""
    query = _enrollments().where(Sponsorship.id == sponsorship_id, Sponsorship.opd_id == opd_id)
    row = (await connection.execute(query)).first()
    return Enrollment(*row) if row is not None else None


async def queue(
    connection: AsyncConnection, *, opd_id: int, limit: int = 1, skip: Sequence[int] = ()
) -> tuple[list[Enrollment], int]:
    """The oldest enrollments waiting for the PIC (not in `skip`), and how many wait in all."""
    waiting = and_(
        Sponsorship.opd_id == opd_id, Sponsorship.status == SponsorshipStatus.WAITING_FOR_PIC
    )
    total = await connection.scalar(select(func.count()).select_from(Sponsorship).where(waiting))
    query = _enrollments().where(waiting)
    if skip:
        query = query.where(Sponsorship.id.not_in(list(skip)))
    query = query.order_by(Sponsorship.status_changed_at, Sponsorship.id).limit(limit)
    rows = (await connection.execute(query)).all()
    return [Enrollment(*row) for row in rows], int(total or 0)


_PROBLEMS = {
    state.Result.NOT_FOUND: "not_found",
    state.Result.CONDITION_UNMET: "no_consent",
    state.Result.ALREADY: "wrong_status",
    state.Result.NOT_ALLOWED: "wrong_status",
}


async def _verify(
    connection: AsyncConnection,
    event: state.Event,
    *,
    opd_id: int,
    sponsorship_id: int,
    pic_id: int,
    now: datetime,
    values: dict[str, object],
    details: dict[str, object] | None = None,
    require_consent: bool = False,
) -> None:
    """The PIC's decision on a waiting enrollment of the OPD, with its audit entry
    (raises ChangeProblem when it is not found, not waiting, or, with
    `require_consent`, its worker has not consented)."""
    outcome = await state.transition(
        connection,
        event,
        sponsorship_id,
        now=now,
        scope=(Sponsorship.opd_id == opd_id,),
        # In the same statement: a consent checked before it could not be relied on.
        conditions=(Sponsorship.worker_consent == WorkerConsent.GIVEN,) if require_consent else (),
        values={**values, "verified_by_pic_id": pic_id},
        actor=Actor.pic(pic_id),
        details=details,
    )
    if not outcome.done:
        raise ChangeProblem(_PROBLEMS[outcome.result])


async def accept(
    connection: AsyncConnection,
    notices: NoticePlanner,
    *,
    opd_id: int,
    sponsorship_id: int,
    pic_id: int,
    now: datetime,
    require_consent: bool = True,
) -> None:
    """The PIC accepts a waiting enrollment (raises ChangeProblem otherwise); the ASN is told.

    With `require_consent` (PROGRAM_ACCEPT_WITHOUT_CONSENT=false, the default) an
    enrollment whose worker has not consented is refused: ChangeProblem("no_consent").
    """
    await _verify(
        connection,
        state.Event.ACCEPT,
        opd_id=opd_id,
        sponsorship_id=sponsorship_id,
        pic_id=pic_id,
        now=now,
        values={},
        require_consent=require_consent,
    )
    await notices.enrollment_accepted(connection, sponsorship_id, now=now)


async def return_enrollment(
    connection: AsyncConnection,
    notices: NoticePlanner,
    *,
    opd_id: int,
    sponsorship_id: int,
    pic_id: int,
    reason_code: ReturnReason | None,
    reason_text: str,
    now: datetime,
) -> None:
    """The PIC returns a waiting enrollment with a reason; the ASN is told at once."""
    await _verify(
        connection,
        state.Event.RETURN,
        opd_id=opd_id,
        sponsorship_id=sponsorship_id,
        pic_id=pic_id,
        now=now,
        values={
            "return_reason": reason_text,
            "return_reason_code": reason_code,
        },
        details={
            "reason_code": reason_code.value if reason_code else None,
            # The PIC's own words (a common reason is its code); erasing the worker
            # redacts their name here too (storage.worker_side.scrub_traces).
            **({"reason": reason_text} if reason_code in (None, ReturnReason.OTHER) else {}),
        },
    )
    await notices.enrollment_returned(connection, sponsorship_id, now=now)


# -- batches -----------------------------------------------------------------------


def _batch(row: Row[Any]) -> BatchInfo:
    values = row._mapping
    return BatchInfo(
        id=values["id"],
        number=values["number"],
        status=BatchStatus(values["status"]),
        row_count=values["row_count"],
        created_at=values["created_at"],
        submitted_at=values["submitted_at"],
    )


_B = SubmissionBatch.__table__.c


async def _batch_where(connection: AsyncConnection, *conditions: object) -> BatchInfo | None:
    row = (
        await connection.execute(
            select(_B.id, _B.number, _B.status, _B.row_count, _B.created_at, _B.submitted_at)
            .where(*conditions)  # type: ignore[arg-type]
            .order_by(_B.id.desc())
            .limit(1)
        )
    ).first()
    return _batch(row) if row is not None else None


async def batch(connection: AsyncConnection, *, opd_id: int, batch_id: int) -> BatchInfo | None:
    return await _batch_where(connection, _B.id == batch_id, _B.opd_id == opd_id)


async def batch_by_number(
    connection: AsyncConnection, *, opd_id: int, number: str
) -> BatchInfo | None:
    return await _batch_where(connection, _B.number == number.strip(), _B.opd_id == opd_id)


async def recent_batches(
    connection: AsyncConnection, *, opd_id: int, limit: int = 5
) -> list[BatchInfo]:
    rows = await connection.execute(
        select(_B.id, _B.number, _B.status, _B.row_count, _B.created_at, _B.submitted_at)
        .where(_B.opd_id == opd_id)
        .order_by(_B.id.desc())
        .limit(limit)
    )
    return [_batch(row) for row in rows]


async def create_batch(
    connection: AsyncConnection, *, opd_id: int, actor: Actor, now: datetime, zone: tzinfo
) -> BatchInfo | None:
    """Put the OPD's accepted, not-yet-batched enrollments into a batch for export.

    A new batch is numbered "<OPD>-<year>-<n>" with the year in `zone`
    (SERTAKAN_TIMEZONE): at 00:30 WIB on 1 January it is the new year's.

    While a batch is exported but not confirmed as submitted, newly accepted
    enrollments join it (the PIC has not sent it yet, so the fresh file replaces
    the old one). Once submitted, a batch never changes, so exporting it again
    gives the same file. Returns None when there is nothing to export.
    """
    open_batch = await _batch_where(
        connection, _B.opd_id == opd_id, _B.status == BatchStatus.EXPORTED
    )
    unbatched = and_(
        Sponsorship.opd_id == opd_id,
        Sponsorship.status == SponsorshipStatus.ACCEPTED,
        Sponsorship.batch_id.is_(None),
    )
    waiting = int(
        await connection.scalar(select(func.count()).select_from(Sponsorship).where(unbatched)) or 0
    )
    if waiting == 0:
        return open_batch
    if open_batch is None:
        year = local_date(now, zone).year
        batch_id = await _new_batch(connection, opd_id=opd_id, actor=actor, now=now, year=year)
    else:
        batch_id = open_batch.id
    await connection.execute(update(Sponsorship).where(unbatched).values(batch_id=batch_id))
    total = int(
        await connection.scalar(
            select(func.count()).select_from(Sponsorship).where(Sponsorship.batch_id == batch_id)
        )
        or 0
    )
    await connection.execute(
        update(SubmissionBatch)
        .where(SubmissionBatch.id == batch_id)
        .values(row_count=total, created_at=now)
    )
    await audit.record(
        connection,
        actor,
        "batch.export",
        record_type="submission_batch",
        record_id=batch_id,
        opd_id=opd_id,
        now=now,
        details={"rows": total, "added": waiting},
    )
    return await batch(connection, opd_id=opd_id, batch_id=batch_id)


async def _new_batch(
    connection: AsyncConnection, *, opd_id: int, actor: Actor, now: datetime, year: int
) -> int:
    code = await connection.scalar(select(Opd.code).where(Opd.id == opd_id))
    prefix = f"{code}-{year}-"
    existing = int(
        await connection.scalar(
            select(func.count())
            .select_from(SubmissionBatch)
            .where(SubmissionBatch.number.startswith(prefix))
        )
        or 0
    )
    result = await connection.execute(
        insert(SubmissionBatch).values(
            opd_id=opd_id,
            number=f"{prefix}{existing + 1:03d}",
            status=BatchStatus.EXPORTED,
            row_count=0,
            created_at=now,
            created_by=str(actor),
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def confirm_batch(
    connection: AsyncConnection, *, opd_id: int, batch_id: int, actor: Actor, now: datetime
) -> BatchInfo:
    """The PIC sent the file to BPJS: its enrollments become "submitted"."""
    current = await batch(connection, opd_id=opd_id, batch_id=batch_id)
    if current is None:
        raise ChangeProblem("not_found")
    if current.status is not BatchStatus.EXPORTED:
        raise ChangeProblem("wrong_status")
    await connection.execute(
        update(SubmissionBatch)
        .where(SubmissionBatch.id == batch_id)
        .values(status=BatchStatus.SUBMITTED, submitted_at=now)
    )
    await state.transition_many(
        connection, state.Event.SUBMIT, Sponsorship.batch_id == batch_id, now=now
    )
    await audit.record(
        connection,
        actor,
        "batch.submit",
        record_type="submission_batch",
        record_id=batch_id,
        opd_id=opd_id,
        now=now,
        details={"rows": current.row_count},
    )
    confirmed = await batch(connection, opd_id=opd_id, batch_id=batch_id)
    assert confirmed is not None
    return confirmed


# -- KPJ imports -------------------------------------------------------------------


async def stage_import(
    connection: AsyncConnection,
    *,
    opd_id: int,
    preview: ImportPreview,
    file_name: str,
    actor: Actor,
    now: datetime,
) -> int:
    """Keep a preview until the PIC decides; writes nothing else. Returns its id."""
    counts = {reason.value: n for reason, n in preview.counts().items()}
    summary = {
        "total_rows": preview.total_rows,
        "empty_rows": preview.empty_rows,
        "matched": len(preview.matched),
        "unchanged": preview.unchanged,
        "rejected": counts,
    }
    result = await connection.execute(
        insert(KpjImport).values(
            opd_id=opd_id,
            created_by=str(actor),
            file_name=file_name[:200],
            status=ImportStatus.PREVIEWED,
            matches=[[sid, kpj] for sid, kpj in preview.matched],
            summary=summary,
            created_at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    import_id = int(key[0])
    await audit.record(
        connection,
        actor,
        "import.preview",
        record_type="kpj_import",
        record_id=import_id,
        opd_id=opd_id,
        now=now,
        details=summary,
    )
    return import_id


async def _previewed_import(
    connection: AsyncConnection, *, opd_id: int, import_id: int
) -> list[list[object]]:
    row = (
        await connection.execute(
            select(KpjImport.status, KpjImport.matches).where(
                KpjImport.id == import_id, KpjImport.opd_id == opd_id
            )
        )
    ).first()
    if row is None:
        raise ChangeProblem("not_found")
    if ImportStatus(row.status) is not ImportStatus.PREVIEWED:
        raise ChangeProblem("wrong_status")
    return list(row.matches)


def _activate_statement(chunk: Sequence[tuple[int, str]], opd_id: int, now: datetime) -> Any:
    """One guarded UPDATE ... FROM a VALUES list for a chunk of (sponsorship id, KPJ):
    set-based, because on PostgreSQL every UPDATE statement on `sponsorship` runs the
    coverage counts' statement triggers (0015), which an executemany would run per row."""
    # A CTE (WITH imported(sid, kpj) AS (VALUES ...)): SQLite takes no column list on
    # a FROM (VALUES ...) alias, both take it on a CTE.
    imported = (
        sa_values(column("sid", Integer), column("kpj", String), name="imported")
        .data(list(chunk))
        .cte("imported")
    )
    return state.statement(
        state.Event.ACTIVATE,
        Sponsorship.id == imported.c.sid,
        Sponsorship.opd_id == opd_id,
        Sponsorship.kpj.is_(None),
        now=now,
        values={"kpj": imported.c.kpj},
    ).returning(Sponsorship.id)


async def _activate(
    connection: AsyncConnection, *, opd_id: int, chunk: Sequence[tuple[int, str]], now: datetime
) -> list[int]:
    """Activate the chunk's sponsorships that may still take their KPJ; their ids, sorted."""
    rows = await connection.execute(_activate_statement(chunk, opd_id, now))
    return sorted(int(sid) for (sid,) in rows)


async def apply_import(
    connection: AsyncConnection,
    notices: NoticePlanner,
    *,
    opd_id: int,
    import_id: int,
    actor: Actor,
    now: datetime,
) -> int:
    """Write the previewed KPJ numbers: the enrollments become active, card-ready
    notices are planned. Rows that changed since the preview (ended, got a KPJ)
    are left alone. Returns how many enrollments became active."""
    matches = await _previewed_import(connection, opd_id=opd_id, import_id=import_id)
    activated: list[int] = []
    for start in range(0, len(matches), CHUNK):
        chunk = [(int(str(sid)), str(kpj)) for sid, kpj in matches[start : start + CHUNK]]
        changed = await _activate(connection, opd_id=opd_id, chunk=chunk, now=now)
        activated.extend(changed)
        await notices.cards_ready(connection, changed, now=now)
    await connection.execute(
        update(KpjImport)
        .where(KpjImport.id == import_id)
        .values(status=ImportStatus.APPLIED, decided_at=now)
    )
    await audit.record(
        connection,
        actor,
        "import.apply",
        record_type="kpj_import",
        record_id=import_id,
        opd_id=opd_id,
        now=now,
        details={"activated": len(activated), "previewed": len(matches)},
    )
    return len(activated)


async def cancel_import(
    connection: AsyncConnection, *, opd_id: int, import_id: int, actor: Actor, now: datetime
) -> None:
    await _previewed_import(connection, opd_id=opd_id, import_id=import_id)
    await connection.execute(
        update(KpjImport)
        .where(KpjImport.id == import_id)
        .values(status=ImportStatus.CANCELLED, decided_at=now)
    )
    await audit.record(
        connection,
        actor,
        "import.cancel",
        record_type="kpj_import",
        record_id=import_id,
        opd_id=opd_id,
        now=now,
    )


# -- cards ---------------------------------------------------------------------------


async def cards_to_hand_out(
    connection: AsyncConnection,
    *,
    opd_id: int,
    limit: int = 10,
    offset: int = 0,
    name: str | None = None,
    batch_number: str | None = None,
) -> tuple[list[Enrollment], int]:
    """Active enrollments whose card has not been handed over yet (oldest KPJ first): one
    page (`limit` from `offset`) and how many there are in all.

    `name`: only workers whose name contains it (any case); `batch_number`: only that
    batch's. The count is of the cards so filtered.
    """
    waiting = and_(Sponsorship.opd_id == opd_id, Sponsorship.status == SponsorshipStatus.ACTIVE)
    if name:
        # Case-insensitive on both databases; % and _ typed by the PIC match themselves.
        waiting = and_(
            waiting, func.lower(Worker.full_name).contains(name.casefold(), autoescape=True)
        )
    if batch_number is not None:
        waiting = and_(
            waiting,
            Sponsorship.batch_id.in_(
                select(SubmissionBatch.id).where(
                    SubmissionBatch.opd_id == opd_id, SubmissionBatch.number == batch_number
                )
            ),
        )
    total = await connection.scalar(
        select(func.count())
        .select_from(Sponsorship)
        .join(Worker, Worker.id == Sponsorship.worker_id)
        .where(waiting)
    )
    if limit <= 0:
        return [], int(total or 0)
    query = (
        _enrollments()
        .where(waiting)
        .order_by(Sponsorship.kpj_imported_at, Sponsorship.id)
        .offset(offset)
        .limit(limit)
    )
    rows = (await connection.execute(query)).all()
    return [Enrollment(*row) for row in rows], int(total or 0)


async def batches_with_cards(connection: AsyncConnection, *, opd_id: int) -> list[tuple[str, int]]:
    """(batch number, cards not yet handed over) for the OPD's batches that have some."""
    rows = await connection.execute(
        select(SubmissionBatch.number, func.count())
        .join(Sponsorship, Sponsorship.batch_id == SubmissionBatch.id)
        .where(
            SubmissionBatch.opd_id == opd_id,
            Sponsorship.status == SponsorshipStatus.ACTIVE,
        )
        .group_by(SubmissionBatch.number)
        .order_by(SubmissionBatch.number)
    )
    return [(str(number), int(n)) for number, n in rows]


async def hand_over(
    connection: AsyncConnection,
    *,
    opd_id: int,
    actor: Actor,
    now: datetime,
    sponsorship_id: int | None = None,
    batch_number: str | None = None,
) -> int:
    """Mark one card (or every active card of a batch) as handed over; returns how many."""
    condition = Sponsorship.opd_id == opd_id
    if sponsorship_id is not None:
        condition = and_(condition, Sponsorship.id == sponsorship_id)
        record: tuple[str, int | str] = ("sponsorship", sponsorship_id)
    elif batch_number is not None:
        found = await batch_by_number(connection, opd_id=opd_id, number=batch_number)
        if found is None:
            raise ChangeProblem("not_found")
        condition = and_(condition, Sponsorship.batch_id == found.id)
        record = ("submission_batch", found.id)
    else:
        raise ValueError("give sponsorship_id or batch_number")
    count = len(await state.transition_many(connection, state.Event.HAND_OVER, condition, now=now))
    if count == 0:
        raise ChangeProblem("wrong_status")
    await audit.record(
        connection,
        actor,
        "card.hand_over",
        record_type=record[0],
        record_id=record[1],
        opd_id=opd_id,
        now=now,
        details={"cards": count},
    )
    return count


async def find_active_by_kpj(
    connection: AsyncConnection, *, opd_id: int, kpj: str
) -> Enrollment | None:
    query = _enrollments().where(
        Sponsorship.opd_id == opd_id,
        Sponsorship.kpj == kpj,
        Sponsorship.status.in_([SponsorshipStatus.ACTIVE, SponsorshipStatus.CARD_HANDED_OVER]),
    )
    row = (await connection.execute(query)).first()
    return Enrollment(*row) if row is not None else None
