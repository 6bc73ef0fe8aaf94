"""Repositories: the queries the engine needs, one class per aggregate.

Each wraps the event's `AsyncSession`; none commits (the unit of work does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import contains_eager

from domain.vocabulary import (
    OPEN_STATUSES,
    Channel,
    ConsentPurpose,
    ConsentSubject,
    Language,
    Occupation,
    PaymentPlan,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from storage.crypto import NikCipher
from storage.models import (
    Asn,
    ChannelAccount,
    ConsentRecord,
    Conversation,
    Sponsorship,
    UtcDateTime,
    Worker,
)

#: Claims an inbound update id; the same SQL works on SQLite (3.24+) and PostgreSQL,
#: and as a fixed text statement it is compiled once, not on every event.
_CLAIM_UPDATE = text(
    "INSERT INTO processed_update (channel, update_id, processed_at) "
    "VALUES (:channel, :update_id, :processed_at) "
    "ON CONFLICT (channel, update_id) DO NOTHING"
).bindparams(bindparam("processed_at", type_=UtcDateTime()))


class UpdateLog:
    """Inbound updates already applied (idempotency by a unique constraint)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def claim(self, channel: Channel, update_id: str, now: datetime) -> bool:
        """Record the update; False when it was already recorded (a replay).

        On PostgreSQL a concurrent claim of the same id waits for the first
        transaction and then returns False, so two processes never both apply it.
        """
        result = await self._connection.execute(
            _CLAIM_UPDATE,
            {"channel": channel.value, "update_id": update_id, "processed_at": now},
        )
        return bool(result.rowcount)


@dataclasses.dataclass(slots=True)
class ConversationRecord:
    """A person's account and conversation as read (and locked) for one event."""

    account_id: int
    language: Language
    conversation_id: int
    flow: str | None
    step: str | None
    data: dict[str, Any]
    history: list[str]
    draft: dict[str, Any] | None
    version: int
    #: The previous inbound event's time.
    updated_at: datetime


_LOAD_CONVERSATION = (
    select(
        ChannelAccount.id,
        ChannelAccount.language,
        Conversation.id,
        Conversation.flow,
        Conversation.step,
        Conversation.data,
        Conversation.history,
        Conversation.draft,
        Conversation.version,
        Conversation.updated_at,
    )
    .join(Conversation, Conversation.channel_account_id == ChannelAccount.id)
    .where(
        ChannelAccount.channel == bindparam("channel"),
        ChannelAccount.external_id == bindparam("external_id"),
    )
    .with_for_update(of=Conversation)
)


# Built once with bind parameters: values given inline (JSON dicts) would be
# hashed into SQLAlchemy's statement cache key on every event.
_SAVE_CONVERSATION = (
    update(Conversation)
    .where(Conversation.id == bindparam("conversation_id"))
    .values(
        flow=bindparam("flow"),
        step=bindparam("step"),
        data=bindparam("data"),
        history=bindparam("history"),
        draft=bindparam("draft"),
        version=bindparam("version"),
        updated_at=bindparam("updated_at"),
    )
)


class Conversations:
    """The per-event read and write of a person's state, in Core: the hot path.

    One SELECT (locking the conversation row) and one UPDATE per event; the
    account and conversation rows are inserted on first contact only.
    """

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def load_for_update(
        self, channel: Channel, external_id: str
    ) -> ConversationRecord | None:
        row = (
            await self._connection.execute(
                _LOAD_CONVERSATION, {"channel": channel.value, "external_id": external_id}
            )
        ).first()
        if row is None:
            return None
        return ConversationRecord(
            account_id=row[0],
            language=Language(row[1]),
            conversation_id=row[2],
            flow=row[3],
            step=row[4],
            data=dict(row[5] or {}),
            history=list(row[6] or []),
            draft=dict(row[7]) if row[7] else None,
            version=row[8],
            updated_at=row[9],
        )

    async def open(
        self,
        channel: Channel,
        external_id: str,
        *,
        language: Language,
        display_name: str | None,
        now: datetime,
    ) -> ConversationRecord:
        """The person's record, locked; account and conversation are created on first contact."""
        record = await self.load_for_update(channel, external_id)
        if record is not None:
            return record
        dialect = self._connection.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await self._connection.execute(
            insert(ChannelAccount)
            .values(
                channel=channel.value,
                external_id=external_id,
                language=language.value,
                display_name=display_name,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["channel", "external_id"])
        )
        account_id = (
            await self._connection.execute(
                select(ChannelAccount.id).where(
                    ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
                )
            )
        ).scalar_one()
        await self._connection.execute(
            insert(Conversation)
            .values(channel_account_id=account_id, data={}, history=[], version=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=["channel_account_id"])
        )
        record = await self.load_for_update(channel, external_id)
        assert record is not None
        return record

    async def save(
        self,
        record: ConversationRecord,
        *,
        flow: str | None,
        step: str | None,
        data: dict[str, Any],
        history: list[str],
        draft: dict[str, Any] | None,
        version: int,
        now: datetime,
    ) -> None:
        await self._connection.execute(
            _SAVE_CONVERSATION,
            {
                "conversation_id": record.conversation_id,
                "flow": flow,
                "step": step,
                "data": data,
                "history": history,
                "draft": draft,
                "version": version,
                "updated_at": now,
            },
        )


class Accounts:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def language(self, channel: Channel, external_id: str) -> Language | None:
        value = (
            await self._connection.execute(
                select(ChannelAccount.language).where(
                    ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
                )
            )
        ).scalar_one_or_none()
        return Language(value) if value is not None else None

    async def set_language(self, account_id: int, language: Language) -> None:
        await self._connection.execute(
            update(ChannelAccount)
            .where(ChannelAccount.id == account_id)
            .values(language=language.value)
        )


# The queries of the flows are built once; per call only parameters change.
_ASN_BY_ACCOUNT = (
    select(Asn)
    .join(Asn.opd)
    .options(contains_eager(Asn.opd))
    .where(Asn.channel_account_id == bindparam("account_id"))
)
_ASN_BY_NIP = select(Asn).where(Asn.nip == bindparam("nip"))
_WORKER_BY_HASH = select(Worker).where(Worker.nik_hash == bindparam("nik_hash"))
_OPEN_SPONSORSHIP_OF_WORKER = (
    select(Sponsorship)
    .join(Sponsorship.asn)
    .join(Sponsorship.opd)
    .options(contains_eager(Sponsorship.asn), contains_eager(Sponsorship.opd))
    .where(Sponsorship.worker_id == bindparam("worker_id"), Sponsorship.status.in_(OPEN_STATUSES))
)
_COUNT_OPEN_OF_ASN = select(func.count(Sponsorship.id)).where(
    Sponsorship.asn_id == bindparam("asn_id"), Sponsorship.status.in_(OPEN_STATUSES)
)


class AsnRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def by_account(self, account_id: int) -> Asn | None:
        result = await self._session.execute(_ASN_BY_ACCOUNT, {"account_id": account_id})
        return result.scalar_one_or_none()

    async def by_nip(self, nip: str) -> Asn | None:
        return (await self._session.execute(_ASN_BY_NIP, {"nip": nip})).scalar_one_or_none()

    async def add(self, asn: Asn) -> Asn:
        self._session.add(asn)
        await self._session.flush()
        return asn


class WorkerRepository:
    def __init__(self, session: AsyncSession, cipher: NikCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def by_nik(self, nik: str) -> Worker | None:
        params = {"nik_hash": self._cipher.lookup_hash(nik)}
        return (await self._session.execute(_WORKER_BY_HASH, params)).scalar_one_or_none()

    async def upsert(
        self,
        *,
        nik: str,
        nik_masked: str,
        full_name: str,
        birth_date: date,
        sex: Sex,
        phone_e164: str | None,
        village: str,
        district: str,
        now: datetime,
    ) -> Worker:
        """The worker row for this NIK, created or refreshed with the latest data."""
        worker = await self.by_nik(nik)
        if worker is None:
            worker = Worker(
                nik_hash=self._cipher.lookup_hash(nik),
                nik_ciphertext=self._cipher.encrypt(nik),
                nik_masked=nik_masked,
                created_at=now,
            )
            self._session.add(worker)
        worker.full_name = full_name
        worker.birth_date = birth_date
        worker.sex = sex
        worker.phone_e164 = phone_e164
        worker.village = village
        worker.district = district
        worker.updated_at = now
        await self._session.flush()
        return worker


class SponsorshipRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def open_for_worker(self, worker_id: int) -> Sponsorship | None:
        """The worker's open sponsorship (any status but lapsed/ended), with its ASN and OPD."""
        result = await self._session.execute(_OPEN_SPONSORSHIP_OF_WORKER, {"worker_id": worker_id})
        return result.scalar_one_or_none()

    async def count_open_for_asn(self, asn_id: int) -> int:
        result = await self._session.execute(_COUNT_OPEN_OF_ASN, {"asn_id": asn_id})
        return int(result.scalar_one())

    async def list_for_asn(self, asn_id: int) -> Sequence[Sponsorship]:
        """The ASN's sponsorships with their workers, open ones first, newest first."""
        stmt = (
            select(Sponsorship)
            .join(Sponsorship.worker)
            .options(contains_eager(Sponsorship.worker))
            .where(Sponsorship.asn_id == asn_id)
            .order_by(Sponsorship.created_at.desc(), Sponsorship.id.desc())
        )
        rows = (await self._session.execute(stmt)).scalars().all()
        return sorted(rows, key=lambda s: not s.status.is_open)

    async def add(
        self,
        *,
        worker_id: int,
        asn_id: int,
        opd_id: int,
        occupation: Occupation,
        plan: PaymentPlan,
        first_month: date,
        worker_consent: WorkerConsent,
        birth_date_differs_from_nik: bool,
        now: datetime,
    ) -> Sponsorship:
        sponsorship = Sponsorship(
            worker_id=worker_id,
            asn_id=asn_id,
            opd_id=opd_id,
            occupation=occupation,
            plan=plan,
            first_month=first_month,
            status=SponsorshipStatus.WAITING_FOR_PIC,
            worker_consent=worker_consent,
            birth_date_differs_from_nik=birth_date_differs_from_nik,
            created_at=now,
            status_changed_at=now,
        )
        self._session.add(sponsorship)
        await self._session.flush()
        return sponsorship


class ConsentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(
        self,
        *,
        subject: ConsentSubject,
        subject_id: int | None,
        purpose: ConsentPurpose,
        text_version: str,
        granted: bool,
        channel: Channel,
        channel_account_id: int,
        recorded_at: datetime,
        sponsorship_id: int | None = None,
    ) -> ConsentRecord:
        record = ConsentRecord(
            subject=subject,
            subject_id=subject_id,
            purpose=purpose,
            text_version=text_version,
            granted=granted,
            channel=channel,
            channel_account_id=channel_account_id,
            sponsorship_id=sponsorship_id,
            recorded_at=recorded_at,
        )
        self._session.add(record)
        await self._session.flush()
        return record

    async def get(self, record_id: int) -> ConsentRecord | None:
        return await self._session.get(ConsentRecord, record_id)
