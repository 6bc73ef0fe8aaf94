"""The ASN stops sponsoring a worker: the state change, in one place.

The sponsorship ends at once (event STOP of `storage.sponsorship_state`: status
ENDED, so it leaves the open-sponsorship index, the reminders, the lapse, the
digest counts and the payroll month) and records the last month it covers: the
last month paid or recorded (a payment waiting for the PIC counts, as the ASN
paid it). The worker stays protected to that month's end; BPJS is told by the
PIC. The caller owns the transaction and plans the notices
(`handlers.notices.Notices.sponsorship_ended`).
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.months import add_months
from domain.vocabulary import OPEN_STATUSES, OutboxStatus
from storage import payments
from storage import sponsorship_state as state
from storage.audit import Actor
from storage.dues_queries import SPONSORSHIP_REMINDER_KINDS, WORKER_REMINDER_KINDS
from storage.models import Outbox, Sponsorship

#: Why an ASN stops, as offered (a typed reason is kept as text).
END_REASONS = ("no_longer_works", "other_coverage", "cannot_pay", "unreachable")
#: `Sponsorship.end_reason` of an ASN's stop starts with this (then the code or "other:text").
ASN_STOPPED = "asn_stopped"


@dataclasses.dataclass(slots=True, frozen=True)
class Ended:
    """A sponsorship the ASN stopped: the last month it covers (None: nothing was paid)."""

    ended_month: date | None


async def last_covered_month(
    connection: AsyncConnection, sponsorship_id: int, first_month: date
) -> date | None:
    """The last month of the unbroken run of paid months from `first_month` (confirmed or
    waiting for the PIC); None when the first month is unpaid."""
    confirmed = (await payments.paid_months(connection, [sponsorship_id]))[sponsorship_id]
    waiting = (await payments.waiting_months(connection, [sponsorship_id]))[sponsorship_id]
    paid = confirmed | waiting
    month, last = first_month, None
    while month in paid:
        last, month = month, add_months(month, 1)
    return last


async def end_sponsorship(
    connection: AsyncConnection,
    *,
    sponsorship_id: int,
    asn_id: int,
    account_id: int,
    reason_code: str | None,
    reason_text: str | None,
    now: datetime,
) -> Ended | None:
    """End the ASN's open sponsorship and say which month it covers last; None when it is
    not this ASN's or no longer open (nothing changed).

    Unsent reminders about it are deleted; the end is audited with the reason code
    (a typed reason stays on the sponsorship, not in the audit details).
    """
    row = (
        await connection.execute(
            select(Sponsorship.first_month, Sponsorship.opd_id, Sponsorship.status).where(
                Sponsorship.id == sponsorship_id,
                Sponsorship.asn_id == asn_id,
                Sponsorship.status.in_(OPEN_STATUSES),
            )
        )
    ).first()
    if row is None:
        return None
    await payments.lock_sponsorships(connection, [sponsorship_id])
    ended_month = await last_covered_month(connection, sponsorship_id, row.first_month)
    stored_reason = f"{ASN_STOPPED}:{reason_code or 'other'}"
    if reason_text:
        stored_reason += f":{reason_text}"
    outcome = await state.transition(
        connection,
        state.Event.STOP,
        sponsorship_id,
        now=now,
        scope=(Sponsorship.asn_id == asn_id,),
        values={"end_reason": stored_reason, "ended_month": ended_month},
        actor=Actor.account("asn", account_id),
        details={
            "reason_code": reason_code,
            "previous_status": str(row.status),
            "ended_month": ended_month.isoformat() if ended_month else None,
        },
    )
    if not outcome.done:
        return None
    kinds = SPONSORSHIP_REMINDER_KINDS + WORKER_REMINDER_KINDS
    await connection.execute(
        delete(Outbox).where(
            Outbox.status == OutboxStatus.PENDING,
            # reminder:<kind>:<YYYY-MM>:<id> (dues_queries.reminder_key), any month.
            or_(
                *(
                    Outbox.dedupe_key.like(f"reminder:{kind}:____-__:{sponsorship_id}")
                    for kind in kinds
                )
            ),
        )
    )
    return Ended(ended_month)


def stop_reason(end_reason: str | None) -> tuple[str, str | None] | None:
    """(reason code, typed text or None) of an ASN's stop; None for other ends."""
    if not end_reason or not end_reason.startswith(f"{ASN_STOPPED}:"):
        return None
    code, _, text = end_reason[len(ASN_STOPPED) + 1 :].partition(":")
    return code, text or None
