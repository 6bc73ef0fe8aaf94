"""The worker's side (SPEC 4.6, 7): found by phone, consent answered, data erased.

A worker has no registration: a WhatsApp sender whose number (the `wa_id` the
platform vouches for) is the phone an ASN typed at enrollment sees their own
record, answers the consent request and may ask for erasure. Nobody else can:
every function here takes that phone and matches it against the worker's row,
so a forged button id of another worker's enrollment finds nothing.

No commit happens here; the caller owns the transaction (the engine's event).
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import contains_eager

from domain.vocabulary import (
    Channel,
    ConsentPurpose,
    ConsentSubject,
    OutboxStatus,
    SponsorshipStatus,
    WorkerConsent,
)
from storage import audit
from storage.audit import Actor
from storage.models import ConsentRecord, Outbox, Sponsorship, Worker

#: Version of the consent request text the worker answers (stored with the answer).
WORKER_CONSENT_VERSION = "worker-consent-2026-11"

#: What an erased worker's row keeps in place of personal data.
ERASED_NAME = "-"
ERASED_MASK = "****************"
_ERASED_BIRTH_DATE = date(1900, 1, 1)


async def records_for_phone(session: AsyncSession, phone_e164: str) -> Sequence[Sponsorship]:
    """The sponsorships of the (not erased) worker(s) with this phone, open first, newest first.

    The worker is loaded with each row; the ASN and OPD are not (ids only).
    """
    rows = (
        (
            await session.execute(
                select(Sponsorship)
                .join(Sponsorship.worker)
                .options(contains_eager(Sponsorship.worker))
                .where(Worker.phone_e164 == phone_e164, Worker.erased_at.is_(None))
                .order_by(Sponsorship.created_at.desc(), Sponsorship.id.desc())
            )
        )
        .scalars()
        .all()
    )
    return sorted(rows, key=lambda s: not s.status.is_open)


class ConsentOutcome(enum.StrEnum):
    GIVEN = "given"
    REFUSED = "refused"
    #: Answered before: the first answer stands.
    ALREADY = "already"
    #: Nothing waits for this number's answer (or the id is not theirs).
    NOT_FOUND = "not_found"


@dataclasses.dataclass(slots=True, frozen=True)
class ConsentAnswer:
    outcome: ConsentOutcome
    sponsorship_id: int | None = None
    worker_name: str | None = None


async def pending_consent(session: AsyncSession, phone_e164: str) -> Sponsorship | None:
    """The newest enrollment of this phone's worker still waiting for their answer."""
    for sponsorship in await records_for_phone(session, phone_e164):
        if sponsorship.worker_consent is WorkerConsent.PENDING and sponsorship.status.is_open:
            return sponsorship
    return None


async def answer_consent(
    session: AsyncSession,
    *,
    phone_e164: str,
    sponsorship_id: int | None,
    granted: bool,
    channel: Channel,
    channel_account_id: int,
    now: datetime,
) -> ConsentAnswer:
    """Record the worker's YA / TIDAK for one enrollment of theirs.

    `sponsorship_id` comes from the template's button payload; None (a typed
    answer) means the newest pending one. A refusal ends the enrollment
    (status ENDED, end reason "worker_refused"), with an audit entry. The answer
    is a consent record (who, when, channel, text version), like the ASN's.
    """
    records = await records_for_phone(session, phone_e164)
    if sponsorship_id is None:
        target = await pending_consent(session, phone_e164)
        if target is None:
            answered = [s for s in records if s.worker_consent is not WorkerConsent.NOT_REQUESTED]
            return ConsentAnswer(ConsentOutcome.ALREADY if answered else ConsentOutcome.NOT_FOUND)
    else:
        target = next((s for s in records if s.id == sponsorship_id), None)
        if target is None:
            return ConsentAnswer(ConsentOutcome.NOT_FOUND)
    if target.worker_consent in (WorkerConsent.GIVEN, WorkerConsent.REFUSED):
        return ConsentAnswer(ConsentOutcome.ALREADY, target.id, target.worker.full_name)
    if not target.status.is_open:
        return ConsentAnswer(ConsentOutcome.NOT_FOUND)
    session.add(
        ConsentRecord(
            subject=ConsentSubject.WORKER,
            subject_id=target.worker_id,
            purpose=ConsentPurpose.WORKER_ENROLLMENT,
            text_version=WORKER_CONSENT_VERSION,
            granted=granted,
            channel=channel,
            channel_account_id=channel_account_id,
            sponsorship_id=target.id,
            recorded_at=now,
        )
    )
    target.worker_consent = WorkerConsent.GIVEN if granted else WorkerConsent.REFUSED
    if not granted:
        target.status = SponsorshipStatus.ENDED
        target.end_reason = "worker_refused"
        target.status_changed_at = now
    await session.flush()
    if not granted:
        await cancel_sponsorship_reminders(await session.connection(), [target.id])
    await audit.record(
        await session.connection(),
        Actor.account("worker", channel_account_id),
        "sponsorship.worker_consent",
        record_type="sponsorship",
        record_id=target.id,
        opd_id=target.opd_id,
        now=now,
        details={"granted": granted, "text_version": WORKER_CONSENT_VERSION},
    )
    return ConsentAnswer(
        ConsentOutcome.GIVEN if granted else ConsentOutcome.REFUSED,
        target.id,
        target.worker.full_name,
    )


@dataclasses.dataclass(slots=True, frozen=True)
class Erasure:
    """What an erasure did: whose data, which enrollments it ended (for the notices)."""

    worker_name: str
    #: (sponsorship id, OPD id, ASN id, KPJ) of every enrollment of the worker.
    sponsorships: tuple[tuple[int, int, int, str | None], ...]
    ended: tuple[int, ...]


async def erase_worker(
    session: AsyncSession,
    *,
    phone_e164: str,
    actor: Actor,
    now: datetime,
) -> Erasure | None:
    """End the worker's open enrollments and anonymise their personal data (SPEC 7).

    Returns what was done (the name as it was, for the notices written by the
    caller in the same transaction), or None when this phone has no record.
    Kept: the enrollment rows (ended, end reason "worker_erasure") with their
    KPJ, so the PIC can report the end to BPJS, and the consent records (proof
    of what was agreed). Replaced: name, NIK (ciphertext, masked form, and the
    lookup hash by random bytes, so the NIK can be enrolled again), birth
    date, phone, village and district. The worker's pending outbox rows go.
    """
    records = await records_for_phone(session, phone_e164)
    if not records:
        return None
    worker = records[0].worker
    name = worker.full_name
    ended: list[int] = []
    for sponsorship in records:
        if sponsorship.status.is_open:
            sponsorship.status = SponsorshipStatus.ENDED
            sponsorship.end_reason = "worker_erasure"
            sponsorship.status_changed_at = now
            ended.append(sponsorship.id)
    summary = tuple((s.id, s.opd_id, s.asn_id, s.kpj) for s in records)
    await session.flush()
    connection = await session.connection()
    await connection.execute(
        update(Worker)
        .where(Worker.id == worker.id)
        .values(
            full_name=ERASED_NAME,
            nik_hash=secrets.token_bytes(32),
            nik_ciphertext=b"",
            nik_masked=ERASED_MASK,
            birth_date=_ERASED_BIRTH_DATE,
            phone_e164=None,
            village=ERASED_NAME,
            district=ERASED_NAME,
            updated_at=now,
            erased_at=now,
        )
    )
    await connection.execute(
        delete(Outbox).where(
            Outbox.channel == Channel.WHATSAPP,
            Outbox.recipient == phone_e164.lstrip("+"),
            Outbox.status == OutboxStatus.PENDING,
        )
    )
    await cancel_sponsorship_reminders(connection, ended)
    for sponsorship_id, opd_id, _asn_id, _kpj in summary:
        await audit.record(
            connection,
            actor,
            "worker.erased",
            record_type="sponsorship",
            record_id=sponsorship_id,
            opd_id=opd_id,
            now=now,
            details={"ended": sponsorship_id in ended},
        )
    session.expire(worker)
    return Erasure(name, summary, tuple(ended))


async def cancel_sponsorship_reminders(
    connection: AsyncConnection, sponsorship_ids: Sequence[int]
) -> None:
    """Delete the still-pending dues reminders of ended enrollments (any kind, any month).

    Reminder keys end with ":<sponsorship id>" (`storage.dues_queries.reminder_key`).
    """
    for sponsorship_id in sponsorship_ids:
        await connection.execute(
            delete(Outbox).where(
                Outbox.dedupe_key.like(f"reminder:%:{sponsorship_id}"),
                Outbox.status == OutboxStatus.PENDING,
            )
        )
