"""Every change of a sponsorship's status, in one place (PRODUCT 3, 4.2-4.6, 7).

A sponsorship moves only by an `Event` declared in `TRANSITIONS`: the statuses it
may leave, the status it reaches, and the other columns that event may write.
Every statement that writes `Sponsorship.status` is built here, guarded by the
declared source statuses in the same statement (`UPDATE ... WHERE id = :id AND
status IN (...)`), so a change that raced with another (two PICs deciding at
once, an ASN stopping while the worker erases) happens once and the loser is
told why. tests/storage/test_sponsorship_state.py scans the code base so that no
other module writes the status.

The life of a sponsorship::

    (enrolled) -> waiting_for_pic --ACCEPT--> accepted --SUBMIT--> submitted
                    ^   |                        |                    |
                    |   RETURN                   +------ACTIVATE------+--> active
                    |   v                                                   |
                    +-- returned (RESUBMIT)              HAND_OVER: active -> card_handed_over
    LAPSE: active, card_handed_over -> lapsed
    STOP, REFUSE, ERASE: any open status -> ended

Functions take the caller's connection and never commit (the caller owns the
transaction, so a change, its audit entry and its notices commit together).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Update, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from domain.vocabulary import OPEN_STATUSES, SponsorshipStatus
from storage import audit
from storage.audit import Actor
from storage.models import Sponsorship

S = SponsorshipStatus

#: The status a new enrollment starts in (the ASN sent it; PRODUCT 4.2).
INITIAL_STATUS = S.WAITING_FOR_PIC


class Event(enum.StrEnum):
    """What moves a sponsorship on, and who causes it."""

    #: The PIC accepts a waiting enrollment (PRODUCT 4.5).
    ACCEPT = "accept"
    #: The PIC returns a waiting enrollment with a reason (PRODUCT 4.5).
    RETURN = "return"
    #: The ASN sends a corrected enrollment back to the PIC (PRODUCT 4.3).
    RESUBMIT = "resubmit"
    #: The PIC confirms the collective file went to BPJS (its accepted rows; PRODUCT 4.5).
    SUBMIT = "submit"
    #: BPJS's KPJ number is applied from the PIC's import file (PRODUCT 4.5).
    ACTIVATE = "activate"
    #: The PIC hands the card over (PRODUCT 4.5).
    HAND_OVER = "hand_over"
    #: Three months unpaid (the reminder planner; PRODUCT 3).
    LAPSE = "lapse"
    #: The ASN stops sponsoring (PRODUCT 4.3).
    STOP = "stop"
    #: The worker refuses consent (PRODUCT 4.6).
    REFUSE = "refuse"
    #: The worker's data is erased (PRODUCT 4.6, 7).
    ERASE = "erase"


@dataclasses.dataclass(slots=True, frozen=True)
class Transition:
    """One event's move: from `sources` to `target`.

    `columns`: what else the caller may write with it; `stamps`: columns set to the
    event's time; `fixed`: values every such change writes. `action`: the audit
    entry `transition` writes for a change made by an actor; None when the caller's
    own entry covers it (a batch, an import, a consent answer, an erasure).
    """

    sources: tuple[SponsorshipStatus, ...]
    target: SponsorshipStatus
    columns: frozenset[str] = frozenset()
    stamps: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    action: str | None = None


#: The whole state machine. A status absent from an event's sources cannot take it.
TRANSITIONS: Mapping[Event, Transition] = MappingProxyType(
    {
        Event.ACCEPT: Transition(
            sources=(S.WAITING_FOR_PIC,),
            target=S.ACCEPTED,
            columns=frozenset({"verified_by_pic_id"}),
            stamps=("verified_at",),
            action="enrollment.accept",
        ),
        Event.RETURN: Transition(
            sources=(S.WAITING_FOR_PIC,),
            target=S.RETURNED,
            columns=frozenset({"verified_by_pic_id", "return_reason", "return_reason_code"}),
            stamps=("verified_at",),
            action="enrollment.return",
        ),
        Event.RESUBMIT: Transition(
            sources=(S.RETURNED,),
            target=S.WAITING_FOR_PIC,
            columns=frozenset(
                {
                    "worker_id",
                    "occupation",
                    "occupation_text",
                    "relationship_to_asn",
                    "plan",
                    "first_month",
                    "birth_date_differs_from_nik",
                }
            ),
            fixed={"correction_count": Sponsorship.correction_count + 1},
            action="enrollment.resubmit",
        ),
        Event.SUBMIT: Transition(sources=(S.ACCEPTED,), target=S.SUBMITTED),
        Event.ACTIVATE: Transition(
            sources=(S.ACCEPTED, S.SUBMITTED),
            target=S.ACTIVE,
            columns=frozenset({"kpj"}),
            stamps=("kpj_imported_at",),
        ),
        Event.HAND_OVER: Transition(
            sources=(S.ACTIVE,), target=S.CARD_HANDED_OVER, stamps=("card_handed_at",)
        ),
        Event.LAPSE: Transition(sources=(S.ACTIVE, S.CARD_HANDED_OVER), target=S.LAPSED),
        Event.STOP: Transition(
            sources=OPEN_STATUSES,
            target=S.ENDED,
            columns=frozenset({"end_reason", "ended_month"}),
            action="sponsorship.end",
        ),
        Event.REFUSE: Transition(
            sources=OPEN_STATUSES, target=S.ENDED, fixed={"end_reason": "worker_refused"}
        ),
        Event.ERASE: Transition(
            sources=OPEN_STATUSES, target=S.ENDED, fixed={"end_reason": "worker_erasure"}
        ),
    }
)


def allowed(event: Event, status: SponsorshipStatus) -> bool:
    """Whether a sponsorship in `status` may take `event`."""
    return status in TRANSITIONS[event].sources


def enrolled(now: datetime) -> dict[str, object]:
    """The status columns of a new enrollment's row (`storage.repositories`)."""
    return {"status": INITIAL_STATUS, "status_changed_at": now}


def _from_sources(event: Event) -> ColumnElement[bool]:
    sources = TRANSITIONS[event].sources
    # Equalities, not IN (...): an expanding parameter cannot run as executemany.
    return or_(*(Sponsorship.status == status for status in sources))


def statement(
    event: Event,
    *where: ColumnElement[bool],
    now: datetime | BindParameter[Any],
    values: Mapping[str, object] | None = None,
) -> Update:
    """The guarded UPDATE of `event` for the rows matching `where` (and a source status).

    `values` may name only the event's declared columns (ValueError otherwise), so
    the table above is the whole truth of what an event writes. `now` may be a bind
    parameter for an executemany.
    """
    change = TRANSITIONS[event]
    given = dict(values or {})
    undeclared = set(given) - change.columns
    if undeclared:
        raise ValueError(f"{event} does not write {sorted(undeclared)}")
    return (
        update(Sponsorship)
        .where(_from_sources(event), *where)
        .values(
            status=change.target,
            status_changed_at=now,
            **dict.fromkeys(change.stamps, now),
            **change.fixed,
            **given,
        )
    )


class Result(enum.StrEnum):
    DONE = "done"
    #: It is in the event's target status already (somebody did it first).
    ALREADY = "already"
    #: Its status does not allow the event.
    NOT_ALLOWED = "not_allowed"
    #: Its status allows the event but a condition of the caller does not hold.
    CONDITION_UNMET = "condition_unmet"
    #: No such sponsorship within the caller's scope.
    NOT_FOUND = "not_found"


@dataclasses.dataclass(slots=True, frozen=True)
class Outcome:
    """What `transition` did; `status` is the status now (None: not found)."""

    result: Result
    status: SponsorshipStatus | None = None
    opd_id: int | None = None

    @property
    def done(self) -> bool:
        return self.result is Result.DONE


async def transition(
    connection: AsyncConnection,
    event: Event,
    sponsorship_id: int,
    *,
    now: datetime,
    scope: Sequence[ColumnElement[bool]] = (),
    conditions: Sequence[ColumnElement[bool]] = (),
    values: Mapping[str, object] | None = None,
    actor: Actor | None = None,
    details: dict[str, Any] | None = None,
) -> Outcome:
    """Move one sponsorship by `event`, atomically, and audit it.

    `scope`: conditions under which it exists for the caller (its OPD, its ASN);
    outside them it is NOT_FOUND. `conditions`: more that must hold in the same
    statement (a worker's consent); failing only those is CONDITION_UNMET. With an
    `actor`, a done change gets the event's audit entry (with `details`).
    """
    query = statement(
        event, Sponsorship.id == sponsorship_id, *scope, *conditions, now=now, values=values
    ).returning(Sponsorship.opd_id)
    changed = (await connection.execute(query)).first()
    change = TRANSITIONS[event]
    if changed is not None:
        if actor is not None and change.action is not None:
            await audit.record(
                connection,
                actor,
                change.action,
                record_type="sponsorship",
                record_id=sponsorship_id,
                opd_id=changed.opd_id,
                now=now,
                details=details,
            )
        return Outcome(Result.DONE, change.target, changed.opd_id)
    found = (
        await connection.execute(
            select(Sponsorship.status, Sponsorship.opd_id).where(
                Sponsorship.id == sponsorship_id, *scope
            )
        )
    ).first()
    if found is None:
        return Outcome(Result.NOT_FOUND)
    status = SponsorshipStatus(found.status)
    if status in change.sources:
        result = Result.CONDITION_UNMET
    elif status is change.target:
        result = Result.ALREADY
    else:
        result = Result.NOT_ALLOWED
    return Outcome(result, status, found.opd_id)


async def transition_many(
    connection: AsyncConnection,
    event: Event,
    *where: ColumnElement[bool],
    now: datetime,
    values: Mapping[str, object] | None = None,
) -> list[tuple[int, int]]:
    """Move every sponsorship matching `where` that may take `event`; returns the
    (id, opd id) of those changed, by id. The caller audits (a batch, an import)."""
    query = statement(event, *where, now=now, values=values).returning(
        Sponsorship.id, Sponsorship.opd_id
    )
    rows = (await connection.execute(query)).all()
    return sorted((int(row[0]), int(row[1])) for row in rows)


def pg_update_sql(event: Event, *, where: str, now: str) -> str:
    """The guarded UPDATE of `event` as PostgreSQL text for a hand-written statement
    (the reminder planner's one-round-trip lapse, `storage.dues_queries`): `where`
    and `now` are SQL (placeholders included); it returns `id, opd_id`."""
    change = TRANSITIONS[event]
    if change.fixed:
        raise ValueError(f"{event} writes fixed values: use statement()")
    sources = ", ".join(f"'{status.value}'" for status in change.sources)
    assignments = [f"status = '{change.target.value}'", f"status_changed_at = {now}"]
    assignments += [f"{column} = {now}" for column in change.stamps]
    return (
        f"UPDATE sponsorship SET {', '.join(assignments)} "
        f"WHERE status IN ({sources}) AND ({where}) RETURNING id, opd_id"
    )


__all__ = [
    "INITIAL_STATUS",
    "TRANSITIONS",
    "Event",
    "Outcome",
    "Result",
    "Transition",
    "allowed",
    "enrolled",
    "pg_update_sql",
    "statement",
    "transition",
    "transition_many",
]
