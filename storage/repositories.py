"""Repositories: the queries the engine needs, one class per aggregate.

Each wraps the event's `AsyncSession`; none commits (the unit of work does).
The engine gives them the event's connection too and its session only on first
use (a callable): their Core statements then run on the connection and an
event that needs no ORM entity never opens a session, whose set-up, flush and
close cost more than the statements (docs/BENCHMARKS.md, "Kirim ke PIC in 7
statements").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import CursorResult, Integer, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import contains_eager

from domain.tariff import FundingSource
from domain.vocabulary import (
    Channel,
    ConsentMethod,
    ConsentPurpose,
    ConsentSubject,
    Occupation,
    PaymentPlan,
    Relationship,
    Sex,
    WorkerConsent,
)
from storage import sponsorship_state as state
from storage.crypto import NikCipher
from storage.models import (
    SPONSORSHIP_IS_OPEN,
    Asn,
    ConsentRecord,
    Opd,
    Sponsorship,
    Worker,
)

# The queries of the flows are built once; per call only parameters change.
_ASN_PROFILE_BY_ACCOUNT = (
    select(Asn.id, Asn.full_name, Asn.opd_id, Opd.name)
    .join(Opd, Opd.id == Asn.opd_id)
    .where(Asn.channel_account_id == bindparam("account_id"))
)
_ASN_BY_NIP = select(Asn).where(Asn.nip == bindparam("nip"))
_WORKER_BY_HASH = select(Worker).where(Worker.nik_hash == bindparam("nik_hash"))
_WORKER_ID_BY_HASH = select(Worker.id).where(Worker.nik_hash == bindparam("nik_hash"))
_OPEN_SPONSORSHIP_OF_WORKER = (
    select(Sponsorship)
    .join(Sponsorship.asn)
    .join(Sponsorship.opd)
    .options(contains_eager(Sponsorship.asn), contains_eager(Sponsorship.opd))
    .where(Sponsorship.worker_id == bindparam("worker_id"), SPONSORSHIP_IS_OPEN)
)
_SPONSORSHIPS_OF_ASN = (
    select(Sponsorship)
    .join(Sponsorship.worker)
    .options(contains_eager(Sponsorship.worker))
    .where(Sponsorship.asn_id == bindparam("asn_id"), Worker.erased_at.is_(None))
    .order_by(Sponsorship.created_at.desc(), Sponsorship.id.desc())
)
# Writes take their values as execution parameters, so each compiles once.
_INSERT_WORKER = insert(Worker)
# A new worker unless one with the NIK was committed meanwhile (then no row, no error:
# the caller needs no savepoint to go on). Text, valid on SQLite (3.35+) and PostgreSQL
# alike: the dialects' `insert().on_conflict_do_nothing()` has no cache key
# (SQLAlchemy 2.0), so it was compiled again on every enrollment.
_NEW_WORKER_COLUMNS = [c for c in Worker.__table__.c if c.name not in ("id", "erased_at")]
_INSERT_NEW_WORKER = (
    text(
        f"INSERT INTO worker ({', '.join(c.name for c in _NEW_WORKER_COLUMNS)}) "
        f"VALUES ({', '.join(':' + c.name for c in _NEW_WORKER_COLUMNS)}) "
        "ON CONFLICT (nik_hash) DO NOTHING RETURNING id"
    )
    .bindparams(*(bindparam(c.name, type_=c.type) for c in _NEW_WORKER_COLUMNS))
    .columns(id=Integer)
)
_UPDATE_WORKER = update(Worker).where(Worker.id == bindparam("worker_id"))
_INSERT_SPONSORSHIP = insert(Sponsorship)
# The profile with the ASN's open sponsorships counted (the enrollment's limit): one
# statement where the profile and a count were two.
_ASN_PROFILE_AND_OPEN_BY_ACCOUNT = _ASN_PROFILE_BY_ACCOUNT.add_columns(
    select(func.count(Sponsorship.id))
    .where(Sponsorship.asn_id == Asn.id, SPONSORSHIP_IS_OPEN)
    .scalar_subquery()
)


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just wrote (lastrowid or RETURNING)."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


@dataclasses.dataclass(slots=True, frozen=True)
class AsnProfile:
    """What the flows need to know about the ASN behind an account (a read model)."""

    id: int
    full_name: str
    opd_id: int
    opd_name: str


#: The event's session, or how to open it (on first use).
SessionSource = AsyncSession | Callable[[], AsyncSession]


class _Repository:
    """On the event's session; Core statements on `connection` when given (else the
    session's), so that they open no session."""

    def __init__(self, session: SessionSource, connection: AsyncConnection | None = None) -> None:
        self._session_source = session
        self._bound_connection = connection

    @property
    def _session(self) -> AsyncSession:
        source = self._session_source
        return source if isinstance(source, AsyncSession) else source()

    async def _connection(self) -> AsyncConnection:
        """The connection of the event's transaction, for Core statements.

        The session does not autoflush, so a Core statement never saw pending ORM
        changes through the session's connection either."""
        if self._bound_connection is not None:
            return self._bound_connection
        return await self._session.connection()


class AsnRepository(_Repository):
    async def profile_by_account(self, account_id: int) -> AsnProfile | None:
        """The registered ASN of this channel account, if any.

        Read in Core on the session's connection: it is asked on most events
        (menus, enrollment) and an ORM entity load costs several times more.
        """
        connection = await self._connection()
        row = (
            await connection.execute(_ASN_PROFILE_BY_ACCOUNT, {"account_id": account_id})
        ).first()
        return AsnProfile(*row) if row is not None else None

    async def profile_and_open_count(self, account_id: int) -> tuple[AsnProfile, int] | None:
        """The registered ASN of this channel account and how many open sponsorships
        (any status but lapsed/ended) it has, if registered."""
        connection = await self._connection()
        params = {"account_id": account_id}
        row = (await connection.execute(_ASN_PROFILE_AND_OPEN_BY_ACCOUNT, params)).first()
        return (AsnProfile(*row[:4]), int(row[4])) if row is not None else None

    async def by_nip(self, nip: str) -> Asn | None:
        return (await self._session.execute(_ASN_BY_NIP, {"nip": nip})).scalar_one_or_none()

    async def add(self, asn: Asn) -> Asn:
        self._session.add(asn)
        await self._session.flush()
        return asn


def _worker_values(
    *,
    full_name: str,
    birth_date: date,
    sex: Sex,
    phone_e164: str | None,
    birth_place: str | None,
    street_address: str | None,
    village: str,
    district: str,
    regency: str | None,
    now: datetime,
) -> dict[str, object]:
    """A worker's fields an enrollment writes (new or refreshed)."""
    return {
        "full_name": full_name,
        "birth_date": birth_date,
        "sex": sex,
        "phone_e164": phone_e164,
        "birth_place": birth_place,
        "street_address": street_address,
        "village": village,
        "district": district,
        "regency": regency,
        "updated_at": now,
    }


class WorkerRepository(_Repository):
    def __init__(
        self,
        session: SessionSource,
        cipher: NikCipher,
        connection: AsyncConnection | None = None,
    ) -> None:
        super().__init__(session, connection)
        self._cipher = cipher

    async def by_nik(self, nik: str) -> Worker | None:
        params = {"nik_hash": self._cipher.lookup_hash(nik)}
        return (await self._session.execute(_WORKER_BY_HASH, params)).scalar_one_or_none()

    async def id_by_nik(self, nik: str) -> int | None:
        """The id of the worker with this NIK, if any (Core: no entity loaded)."""
        connection = await self._connection()
        params = {"nik_hash": self._cipher.lookup_hash(nik)}
        return (await connection.execute(_WORKER_ID_BY_HASH, params)).scalar_one_or_none()

    async def upsert(
        self,
        existing: int | None,
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
        birth_place: str | None = None,
        street_address: str | None = None,
        regency: str | None = None,
    ) -> int:
        """The id of the worker row for this NIK, created or refreshed with the latest data.

        `existing` is the id of the worker with this NIK the caller already looked
        up (`id_by_nik`), or None. Written in Core: an ORM flush costs about 1 ms
        here (bench/).
        """
        values = _worker_values(
            full_name=full_name,
            birth_date=birth_date,
            sex=sex,
            phone_e164=phone_e164,
            birth_place=birth_place,
            street_address=street_address,
            village=village,
            district=district,
            regency=regency,
            now=now,
        )
        connection = await self._connection()
        if existing is not None:
            await connection.execute(_UPDATE_WORKER, {"worker_id": existing, **values})
            return existing
        result = await connection.execute(
            _INSERT_WORKER, self._new_worker(nik, nik_masked, now, values)
        )
        return _new_id(result)

    async def add_if_new(
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
        birth_place: str | None = None,
        street_address: str | None = None,
        regency: str | None = None,
    ) -> int | None:
        """Insert the worker with this NIK; its id, or None when a worker with the NIK
        exists (committed by another transaction since the caller looked: on
        PostgreSQL this waits for that transaction, as a unique violation would).

        Unlike `upsert(None, ...)` a NIK already taken raises nothing, so the caller's
        transaction goes on without a savepoint."""
        values = _worker_values(
            full_name=full_name,
            birth_date=birth_date,
            sex=sex,
            phone_e164=phone_e164,
            birth_place=birth_place,
            street_address=street_address,
            village=village,
            district=district,
            regency=regency,
            now=now,
        )
        connection = await self._connection()
        params = self._new_worker(nik, nik_masked, now, values)
        return (await connection.execute(_INSERT_NEW_WORKER, params)).scalar_one_or_none()

    def _new_worker(
        self, nik: str, nik_masked: str, now: datetime, values: dict[str, object]
    ) -> dict[str, object]:
        return {
            "nik_hash": self._cipher.lookup_hash(nik),
            "nik_ciphertext": self._cipher.encrypt(nik),
            "nik_masked": nik_masked,
            "created_at": now,
            **values,
        }


class SponsorshipRepository(_Repository):
    async def open_for_worker(self, worker_id: int) -> Sponsorship | None:
        """The worker's open sponsorship (any status but lapsed/ended), with its ASN and OPD."""
        result = await self._session.execute(_OPEN_SPONSORSHIP_OF_WORKER, {"worker_id": worker_id})
        return result.scalar_one_or_none()

    async def list_for_asn(self, asn_id: int) -> Sequence[Sponsorship]:
        """The ASN's sponsorships with their workers, open ones first, newest first.

        A worker whose data was erased is left out: nothing of them is left to show
        (the name is "-") and nothing can be done for them; the ASN was told.
        """
        params = {"asn_id": asn_id}
        rows = (await self._session.execute(_SPONSORSHIPS_OF_ASN, params)).scalars().all()
        return sorted(rows, key=lambda s: not s.status.is_open)

    async def add(
        self,
        *,
        worker_id: int,
        asn_id: int,
        opd_id: int,
        occupation: Occupation | None,
        plan: PaymentPlan,
        first_month: date,
        worker_consent: WorkerConsent,
        birth_date_differs_from_nik: bool,
        now: datetime,
        relationship: Relationship = Relationship.OTHER,
        occupation_text: str | None = None,
        consent_requested_via: ConsentMethod | None = None,
    ) -> int:
        """Insert a new enrollment (waiting for the PIC); returns its id.

        `consent_requested_via`: the worker is asked this way at once (with
        `worker_consent` pending): written with the row, not updated after it."""
        connection = await self._connection()
        asked: dict[str, object] = {}
        if consent_requested_via is not None:
            asked = {"consent_requested_via": consent_requested_via, "consent_requested_at": now}
        result = await connection.execute(
            _INSERT_SPONSORSHIP,
            {
                **asked,
                "worker_id": worker_id,
                "asn_id": asn_id,
                "opd_id": opd_id,
                "occupation": occupation,
                "occupation_text": occupation_text,
                "relationship_to_asn": relationship,
                "plan": plan,
                "first_month": first_month,
                "funding_source": FundingSource.PAYROLL_DEDUCTION
                if plan is PaymentPlan.PAYROLL_DEDUCTION
                else FundingSource.ASN_PERSONAL,
                "worker_consent": worker_consent,
                "birth_date_differs_from_nik": birth_date_differs_from_nik,
                "created_at": now,
                **state.enrolled(now),
            },
        )
        return _new_id(result)


class ConsentRepository(_Repository):
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
