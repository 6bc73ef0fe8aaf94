"""The worker's side (PRODUCT 4.6, 7): found by phone, consent answered, data erased.

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
import json
import re
import secrets
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Text, and_, cast, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import contains_eager

from domain.vocabulary import (
    Channel,
    ConsentMethod,
    ConsentPurpose,
    ConsentSubject,
    OutboxStatus,
    SponsorshipStatus,
    WorkerConsent,
)
from storage import audit, reply_queue, tickets
from storage import sponsorship_state as state
from storage.audit import Actor
from storage.models import (
    Administrator,
    Asn,
    AuditLog,
    ChannelAccount,
    ConsentRecord,
    Conversation,
    FailedUpdate,
    Outbox,
    Pic,
    Sponsorship,
    TicketMessage,
    WhatsappInbound,
    Worker,
)

#: Version of the consent request text the worker answers (stored with the answer).
WORKER_CONSENT_VERSION = "worker-consent-2026-11"

#: What an erased worker's row keeps in place of personal data.
ERASED_NAME = "-"
ERASED_MASK = "****************"
_ERASED_BIRTH_DATE = date(1900, 1, 1)
#: Clocks of several bot processes may differ a little (see `Traces.since`).
_CLOCK_MARGIN = timedelta(days=1)
#: Traces shorter than this are not searched for in other rows (see `Traces.words`).
_MIN_TRACE_LENGTH = 3


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
    #: The enrollment's status when the answer came (the worker is told what it means:
    #: a PIC may have accepted or returned it already).
    status: SponsorshipStatus | None = None


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
    """Record the worker's YA / TIDAK on WhatsApp for one enrollment of theirs.

    `sponsorship_id` comes from the template's button payload; None (a typed
    answer) means the newest pending one. See `record_consent` for what is written.
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
    return await record_consent(
        session,
        target,
        granted=granted,
        method=ConsentMethod.WHATSAPP,
        channel=channel,
        channel_account_id=channel_account_id,
        actor=Actor.account("worker", channel_account_id),
        now=now,
    )


async def record_consent(
    session: AsyncSession,
    target: Sponsorship,
    *,
    granted: bool,
    method: ConsentMethod,
    channel: Channel,
    channel_account_id: int,
    actor: Actor,
    now: datetime,
    evidence_file_ref: str | None = None,
) -> ConsentAnswer:
    """Record a worker's answer for one enrollment (loaded with its worker), however it came.

    The first answer stands (ALREADY afterwards); an ended enrollment takes none
    (NOT_FOUND). A refusal ends the enrollment (status ENDED, end reason
    "worker_refused"), also one a PIC already accepted (accepted without consent,
    PROGRAM_ACCEPT_WITHOUT_CONSENT): nobody is enrolled against their will; a KPJ
    issued stays on the row for the PIC's report to BPJS. The answer is a consent
    record (who, when, channel, method, text version, a signed form's scan) with
    an audit entry by `actor` (the worker, or the PIC who recorded a form).
    """
    if target.worker_consent in (WorkerConsent.GIVEN, WorkerConsent.REFUSED):
        return ConsentAnswer(
            ConsentOutcome.ALREADY, target.id, target.worker.full_name, target.status
        )
    if not target.status.is_open:
        return ConsentAnswer(ConsentOutcome.NOT_FOUND)
    status_before = target.status
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
            method=method,
            evidence_file_ref=evidence_file_ref,
        )
    )
    target.worker_consent = WorkerConsent.GIVEN if granted else WorkerConsent.REFUSED
    target.consent_method = method
    await session.flush()
    if not granted:
        connection = await session.connection()
        # An enrollment ended meanwhile (its ASN stopped) keeps its end; the refusal stands.
        await state.transition(connection, state.Event.REFUSE, target.id, now=now)
        await session.refresh(target, ["status", "end_reason", "status_changed_at"])
        await cancel_sponsorship_reminders(connection, [target.id])
    await audit.record(
        await session.connection(),
        actor,
        "sponsorship.worker_consent",
        record_type="sponsorship",
        record_id=target.id,
        opd_id=target.opd_id,
        now=now,
        details={
            "granted": granted,
            "text_version": WORKER_CONSENT_VERSION,
            "method": method.value,
        },
    )
    return ConsentAnswer(
        ConsentOutcome.GIVEN if granted else ConsentOutcome.REFUSED,
        target.id,
        target.worker.full_name,
        status_before,
    )


@dataclasses.dataclass(slots=True, frozen=True)
class PhoneWorker:
    """One (not erased) worker enrolled with a phone: what a chooser shows."""

    id: int
    full_name: str
    nik_masked: str


async def workers_for_phone(session: AsyncSession, phone_e164: str) -> list[PhoneWorker]:
    """The (not erased) workers enrolled with this phone, oldest first.

    Usually one; an ASN may type one number for two workers (a shared family
    phone), and then HAPUS and `sertakan worker erase` must pick one.
    """
    rows = await session.execute(
        select(Worker.id, Worker.full_name, Worker.nik_masked)
        .where(Worker.phone_e164 == phone_e164, Worker.erased_at.is_(None))
        .order_by(Worker.id)
    )
    return [PhoneWorker(row.id, row.full_name, row.nik_masked) for row in rows]


@dataclasses.dataclass(slots=True, frozen=True)
class ErasedEnrollment:
    """One enrollment of an erased worker, as the notices about it need it (no personal data)."""

    sponsorship_id: int
    opd_id: int
    asn_id: int
    kpj: str | None
    enrolled_on: date
    #: True when the erasure ended it (it was open).
    ended: bool


@dataclasses.dataclass(slots=True, frozen=True)
class Erasure:
    """What an erasure did: whose enrollments it ended (for the notices); no name kept."""

    worker_id: int
    enrollments: tuple[ErasedEnrollment, ...]

    @property
    def ended(self) -> tuple[int, ...]:
        return tuple(e.sponsorship_id for e in self.enrollments if e.ended)


async def erase_worker(
    session: AsyncSession,
    *,
    phone_e164: str,
    worker_id: int,
    actor: Actor,
    now: datetime,
    inbound_message_id: str | None = None,
) -> Erasure | None:
    """End one worker's open enrollments and anonymise their personal data (PRODUCT 7).

    The worker is named by id and must be a not-erased worker with this phone
    (the number WhatsApp vouches for, or the one the administrator typed);
    otherwise nothing happens and None is returned. A phone may be shared by
    several workers (`workers_for_phone`): only this one's enrollments end and
    only this one's data goes; the others keep theirs.

    Kept: the enrollment rows (ended, end reason "worker_erasure") with their
    KPJ, so the PIC can report the end to BPJS, and the consent records (proof
    of what was agreed). Replaced: name, NIK (ciphertext, masked form, and the
    lookup hash by random bytes, so the NIK can be enrolled again), birth
    date, place of birth, phone, street, village, district and regency. Every
    other copy is scrubbed by
    `scrub_traces` (notices, the number's account, journal and parked updates).
    `inbound_message_id` is the WhatsApp message being handled (the HAPUS
    confirmation), whose journal row is scrubbed with the others. The caller
    writes the notices from the returned `Erasure`, which holds no name.
    """
    worker = await session.get(Worker, worker_id)
    if worker is None or worker.erased_at is not None or worker.phone_e164 != phone_e164:
        return None
    traces = Traces(
        name=worker.full_name,
        nik_masked=worker.nik_masked,
        phone_e164=phone_e164,
        since=worker.created_at - _CLOCK_MARGIN,
    )
    records = (
        (
            await session.execute(
                select(Sponsorship)
                .where(Sponsorship.worker_id == worker_id)
                .order_by(Sponsorship.id)
            )
        )
        .scalars()
        .all()
    )
    await session.flush()
    connection = await session.connection()
    ended = {
        sid
        for sid, _ in await state.transition_many(
            connection, state.Event.ERASE, Sponsorship.worker_id == worker_id, now=now
        )
    }
    enrollments = [
        ErasedEnrollment(
            sponsorship.id,
            sponsorship.opd_id,
            sponsorship.asn_id,
            sponsorship.kpj,
            sponsorship.created_at.date(),
            sponsorship.id in ended,
        )
        for sponsorship in records
    ]
    await connection.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(
            full_name=ERASED_NAME,
            nik_hash=secrets.token_bytes(32),
            nik_ciphertext=b"",
            nik_masked=ERASED_MASK,
            birth_date=_ERASED_BIRTH_DATE,
            phone_e164=None,
            birth_place=None,
            street_address=None,
            village=ERASED_NAME,
            district=ERASED_NAME,
            regency=None,
            updated_at=now,
            erased_at=now,
        )
    )
    erasure = Erasure(worker_id, tuple(enrollments))
    # The worker's questions to their PIC quote them: they go with the worker.
    await tickets.delete_for_worker(connection, worker_id)
    await cancel_sponsorship_reminders(connection, erasure.ended)
    await scrub_traces(
        connection,
        traces,
        sponsorship_ids=[e.sponsorship_id for e in enrollments],
        inbound_message_id=inbound_message_id,
    )
    for enrollment in enrollments:
        await audit.record(
            connection,
            actor,
            "worker.erased",
            record_type="sponsorship",
            record_id=enrollment.sponsorship_id,
            opd_id=enrollment.opd_id,
            now=now,
            details={"ended": enrollment.ended},
        )
    session.expire(worker)
    for sponsorship in records:
        session.expire(sponsorship)
    return erasure


@dataclasses.dataclass(slots=True, frozen=True)
class Traces:
    """The personal data of an erased worker as other rows may quote it."""

    name: str
    nik_masked: str
    phone_e164: str
    #: Nothing written before this can quote the worker (their row's creation, less a
    #: margin for another process's clock): older notices are not searched.
    since: datetime | None = None

    @property
    def wa_id(self) -> str:
        """The number as WhatsApp addresses it (digits, no "+")."""
        return self.phone_e164.lstrip("+")

    def words(self) -> list[str]:
        """Strings to blank wherever they appear: the name, the masked NIK, the number."""
        words = [self.name, self.nik_masked, self.phone_e164, self.wa_id]
        if self.phone_e164.startswith("+62"):
            words.append("0" + self.phone_e164[3:])  # as written on Indonesian forms
        # A two-letter name ("Li") would match half the notices: too short to search for.
        return [
            word
            for word in words
            if len(word.strip()) >= _MIN_TRACE_LENGTH and word not in (ERASED_NAME, ERASED_MASK)
        ]


#: What replaces an erased worker's name (or number) inside notice texts and drafts.
ERASED_TEXT = "[dihapus]"
#: Prefix of the external id an erased number's account gets (never a valid wa_id).
ERASED_ACCOUNT_PREFIX = "erased:"


def _pattern(words: Sequence[str]) -> re.Pattern[str]:
    # Whole words only, longest first: "Siti Aminah" before "Siti"; case as typed or not.
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _redact(value: Any, pattern: re.Pattern[str]) -> Any:
    """`value` (text or JSON-shaped data) with every match replaced by `ERASED_TEXT`."""
    if isinstance(value, str):
        return pattern.sub(ERASED_TEXT, value)
    if isinstance(value, dict):
        return {key: _redact(item, pattern) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, pattern) for item in value]
    return value


def _like_any(column: Any, words: Sequence[str]) -> Any:
    """`column` (text, or JSON cast to text) contains one of `words`, as typed or JSON-escaped.

    Each word as typed, in lower case and in capitals (SQLite's LIKE ignores
    ASCII case anyway; lower() over every row cost four times the LIKEs); JSON
    escapes non-ASCII letters. `_redact` then decides by whole words. A full
    scan: erasures are rare, and the tables it reads are bounded by retention.
    """
    text_column = cast(column, Text)
    forms = {form for word in words for form in (word, word.lower(), word.upper())}
    needles = forms | {json.dumps(form)[1:-1] for form in forms}
    return or_(*(text_column.like(f"%{_escape_like(n)}%", escape="\\") for n in sorted(needles)))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def number_in_use(connection: AsyncConnection, phone_e164: str) -> bool:
    """Whether the number still belongs to someone: a not-erased worker, an ASN, a PIC or
    an administrator.

    Then its account, journal and parked updates are theirs too and stay.
    """
    wa_id = phone_e164.lstrip("+")
    account = (
        select(ChannelAccount.id)
        .where(ChannelAccount.channel == Channel.WHATSAPP, ChannelAccount.external_id == wa_id)
        .scalar_subquery()
    )
    checks = (
        select(Worker.id).where(Worker.phone_e164 == phone_e164, Worker.erased_at.is_(None)),
        select(Asn.id).where(or_(Asn.phone_e164 == phone_e164, Asn.channel_account_id == account)),
        select(Pic.id).where(
            Pic.removed_at.is_(None),
            or_(Pic.phone_e164 == phone_e164, Pic.channel_account_id == account),
        ),
        select(Administrator.id).where(
            Administrator.removed_at.is_(None), Administrator.channel_account_id == account
        ),
    )
    for check in checks:
        if (await connection.execute(check.limit(1))).first() is not None:
            return True
    return False


async def scrub_traces(
    connection: AsyncConnection,
    traces: Traces,
    *,
    sponsorship_ids: Sequence[int],
    inbound_message_id: str | None = None,
) -> None:
    """Remove every copy of an erased worker's data outside the worker row (UU PDP Pasal 8, 43).

    - Outbox: notices not yet sent to the worker's number are deleted (all of
      them, or, when the number is still in use, those naming the worker);
      every other notice naming the worker, to anyone (ASN, PIC, worker), sent
      or not, has the name, masked NIK and number replaced by `ERASED_TEXT`
      in its body and parameters; sent ones to the number lose the recipient
      and the platform's message id (a `wamid` encodes the number).
    - Conversations whose answers or parked draft quote the name (an ASN's
      correction draft) and PICs' typed return reasons (on the enrollment and in
      its audit entry) are redacted the same way.
    - When the number no longer belongs to anyone (`number_in_use`): its
      WhatsApp account gets an `ERASED_ACCOUNT_PREFIX` id and no display name,
      its conversation is emptied, its handled journal rows, parked updates and
      replies still waiting to be sent are deleted, and a journal row still
      being handled (this very HAPUS) keeps no number (it is deleted once
      handled, with the others at the retention cut-off). Messages not yet
      handled stay: they are new words of someone who may still need an answer.

    Over-redaction errs on privacy's side: another person's notice that
    quotes the same name (as a whole word) loses it too. A table added later
    that holds chat text or numbers gets its statement here.
    """
    in_use = await number_in_use(connection, traces.phone_e164)
    words = traces.words()
    pattern = _pattern(words)
    to_number = Outbox.recipient == traces.wa_id
    naming = or_(_like_any(Outbox.body, words), _like_any(Outbox.params, words))
    if traces.since is not None:
        naming = and_(Outbox.created_at >= traces.since, naming)
    about = or_(*(Outbox.dedupe_key.like(f"%:{sid}") for sid in sponsorship_ids), naming)
    unsent = Outbox.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING))
    await connection.execute(
        delete(Outbox).where(
            Outbox.channel == Channel.WHATSAPP,
            to_number,
            unsent,
            *(() if not in_use else (about,)),
        )
    )
    rows = await connection.execute(
        select(Outbox.id, Outbox.body, Outbox.params, Outbox.recipient).where(
            or_(naming, and_(to_number, Outbox.channel == Channel.WHATSAPP))
        )
    )
    for row in rows.all():
        values: dict[str, Any] = {
            "body": _redact(row.body, pattern),
            "params": _redact(row.params, pattern),
        }
        if row.recipient == traces.wa_id and not in_use:
            values["recipient"] = ERASED_TEXT
            values["provider_message_id"] = None
        await connection.execute(update(Outbox).where(Outbox.id == row.id).values(values))
    await _redact_rows(connection, pattern, words)
    if not in_use:
        await _scrub_number(connection, traces.wa_id, inbound_message_id)


async def _redact_rows(
    connection: AsyncConnection, pattern: re.Pattern[str], words: list[str]
) -> None:
    """Conversations and typed return reasons (and their audit entries) that quote the worker."""
    conversations = await connection.execute(
        select(Conversation.id, Conversation.data, Conversation.draft).where(
            or_(_like_any(Conversation.data, words), _like_any(Conversation.draft, words))
        )
    )
    for row in conversations.all():
        await connection.execute(
            update(Conversation)
            .where(Conversation.id == row.id)
            .values(data=_redact(row.data, pattern), draft=_redact(row.draft, pattern))
        )
    reasons = await connection.execute(
        select(Sponsorship.id, Sponsorship.return_reason).where(
            _like_any(Sponsorship.return_reason, words)
        )
    )
    for row in reasons.all():
        await connection.execute(
            update(Sponsorship)
            .where(Sponsorship.id == row.id)
            .values(return_reason=_redact(row.return_reason, pattern))
        )
    # A typed return reason is kept in its audit entry too; the entry stays, the name not.
    entries = await connection.execute(
        select(AuditLog.id, AuditLog.details).where(
            AuditLog.action == "enrollment.return", _like_any(AuditLog.details, words)
        )
    )
    for row in entries.all():
        await connection.execute(
            update(AuditLog)
            .where(AuditLog.id == row.id)
            .values(details=_redact(row.details, pattern))
        )
    # Questions of others (the ASN's, a PIC's answer) that name the worker.
    for message_id, body in await tickets.messages_quoting(
        connection, _like_any(TicketMessage.body, words)
    ):
        await tickets.set_body(connection, message_id, _redact(body, pattern))


async def _scrub_number(
    connection: AsyncConnection, wa_id: str, inbound_message_id: str | None
) -> None:
    """The number's WhatsApp account, conversation, journal rows and parked updates."""
    account_id = (
        await connection.execute(
            select(ChannelAccount.id).where(
                ChannelAccount.channel == Channel.WHATSAPP, ChannelAccount.external_id == wa_id
            )
        )
    ).scalar_one_or_none()
    if account_id is not None:
        # The row stays (consent records point at it); the number and profile name go.
        await connection.execute(
            update(ChannelAccount)
            .where(ChannelAccount.id == account_id)
            .values(external_id=ERASED_ACCOUNT_PREFIX + secrets.token_hex(16), display_name=None)
        )
        await connection.execute(
            update(Conversation)
            .where(Conversation.channel_account_id == account_id)
            .values(flow=None, step=None, data={}, history=[], draft=None)
        )
        await tickets.delete_for_account(connection, account_id)
    from_number = WhatsappInbound.sender_id == wa_id
    await connection.execute(
        delete(WhatsappInbound).where(from_number, WhatsappInbound.processed_at.is_not(None))
    )
    if inbound_message_id is not None:
        # Being handled now: the processor marks it handled by id; the prune deletes it.
        await connection.execute(
            update(WhatsappInbound)
            .where(from_number, WhatsappInbound.message_id == inbound_message_id)
            .values(sender_id=ERASED_TEXT)
        )
    await connection.execute(
        delete(FailedUpdate).where(
            FailedUpdate.channel == Channel.WHATSAPP, FailedUpdate.sender_id == wa_id
        )
    )
    # Replies to the number still waiting for WhatsApp (encrypted; they may quote the
    # record). The answer to this very HAPUS is queued after this and, like every
    # reply, deleted once delivered.
    await reply_queue.drop_for_chat(connection, Channel.WHATSAPP, wa_id)


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
