"""Repositories: the queries the engine needs, one class per aggregate.

Each wraps the event's `AsyncSession`; none commits (the unit of work does).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
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
    ProcessedUpdate,
    Sponsorship,
    Worker,
)


def _insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT DO NOTHING on both SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class UpdateLog:
    """Inbound updates already applied (idempotency by a unique constraint)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, channel: Channel, update_id: str, now: datetime) -> bool:
        """Record the update; False when it was already recorded (a replay).

        On PostgreSQL a concurrent claim of the same id waits for the first
        transaction and then returns False, so two processes never both apply it.
        """
        stmt = (
            _insert(self._session, ProcessedUpdate)
            .values(channel=channel.value, update_id=update_id, processed_at=now)
            .on_conflict_do_nothing(index_elements=["channel", "update_id"])
        )
        result = await self._session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]


class Accounts:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get_or_create(
        self,
        channel: Channel,
        external_id: str,
        *,
        language: Language,
        display_name: str | None,
        now: datetime,
    ) -> ChannelAccount:
        """The account for (channel, external_id), created on first contact."""
        stmt = (
            _insert(self._session, ChannelAccount)
            .values(
                channel=channel.value,
                external_id=external_id,
                language=language.value,
                display_name=display_name,
                created_at=now,
                last_inbound_at=now,
            )
            .on_conflict_do_nothing(index_elements=["channel", "external_id"])
        )
        await self._session.execute(stmt)
        account = (
            await self._session.execute(
                select(ChannelAccount).where(
                    ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
                )
            )
        ).scalar_one()
        account.last_inbound_at = now
        return account

    async def find(self, channel: Channel, external_id: str) -> ChannelAccount | None:
        return (
            await self._session.execute(
                select(ChannelAccount).where(
                    ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
                )
            )
        ).scalar_one_or_none()


class Conversations:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def load_for_update(self, account_id: int, now: datetime) -> Conversation:
        """The account's conversation row, locked until commit (created if missing)."""
        stmt = (
            select(Conversation)
            .where(Conversation.channel_account_id == account_id)
            .with_for_update()
        )
        conversation = (await self._session.execute(stmt)).scalar_one_or_none()
        if conversation is None:
            insert = (
                _insert(self._session, Conversation)
                .values(
                    channel_account_id=account_id,
                    data={},
                    history=[],
                    version=0,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["channel_account_id"])
            )
            await self._session.execute(insert)
            conversation = (await self._session.execute(stmt)).scalar_one()
        return conversation


class AsnRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def by_account(self, account_id: int) -> Asn | None:
        stmt = (
            select(Asn)
            .join(Asn.opd)
            .options(contains_eager(Asn.opd))
            .where(Asn.channel_account_id == account_id)
        )
        return (await self._session.execute(stmt)).scalar_one_or_none()

    async def by_nip(self, nip: str) -> Asn | None:
        return (await self._session.execute(select(Asn).where(Asn.nip == nip))).scalar_one_or_none()

    async def add(self, asn: Asn) -> Asn:
        self._session.add(asn)
        await self._session.flush()
        return asn


class WorkerRepository:
    def __init__(self, session: AsyncSession, cipher: NikCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def by_nik(self, nik: str) -> Worker | None:
        stmt = select(Worker).where(Worker.nik_hash == self._cipher.lookup_hash(nik))
        return (await self._session.execute(stmt)).scalar_one_or_none()

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
        stmt = (
            select(Sponsorship)
            .join(Sponsorship.asn)
            .join(Sponsorship.opd)
            .options(contains_eager(Sponsorship.asn), contains_eager(Sponsorship.opd))
            .where(Sponsorship.worker_id == worker_id, Sponsorship.status.in_(OPEN_STATUSES))
        )
        return (await self._session.execute(stmt)).scalar_one_or_none()

    async def count_open_for_asn(self, asn_id: int) -> int:
        stmt = select(func.count(Sponsorship.id)).where(
            Sponsorship.asn_id == asn_id, Sponsorship.status.in_(OPEN_STATUSES)
        )
        return int((await self._session.execute(stmt)).scalar_one())

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

