"""SQLAlchemy 2 models. Alembic migrations in storage/migrations mirror these.

Times are stored as aware UTC datetimes; money as integer rupiah; the NIK only
as ciphertext plus a keyed hash (SPEC 7).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from domain.vocabulary import (
    Channel,
    ConsentPurpose,
    ConsentSubject,
    EmploymentType,
    Language,
    Occupation,
    PaymentPlan,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum(enum_cls: type[Any], name: str) -> Enum:
    # Stored as the enum's value (lower-case words), as VARCHAR with a CHECK-free
    # native_enum=False so adding a member later needs no ALTER TYPE.
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
    )


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Opd(Base):
    """An agency (Organisasi Perangkat Daerah); the list is data loaded by the administrator."""

    __tablename__ = "opd"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Lower-case, punctuation-free name for searching.
    search_name: Mapped[str] = mapped_column(String(200), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ChannelAccount(Base):
    """One person on one channel (a Telegram user, a WhatsApp number, a console user)."""

    __tablename__ = "channel_account"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    external_id: Mapped[str] = mapped_column(String(64))
    language: Mapped[Language] = mapped_column(_enum(Language, "language"))
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Asn(Base):
    """A registered civil servant (sponsor)."""

    __tablename__ = "asn"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nip: Mapped[str] = mapped_column(String(18), unique=True)
    employment_type: Mapped[EmploymentType] = mapped_column(
        _enum(EmploymentType, "employment_type")
    )
    full_name: Mapped[str] = mapped_column(String(120))
    birth_date: Mapped[date] = mapped_column(Date)
    sex: Mapped[Sex] = mapped_column(_enum(Sex, "sex"))
    opd_id: Mapped[int] = mapped_column(ForeignKey("opd.id"), index=True)
    phone_e164: Mapped[str] = mapped_column(String(20))
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id"), unique=True)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime())

    opd: Mapped[Opd] = relationship(lazy="raise")


class Worker(Base):
    """A vulnerable informal worker; one row per NIK (found by `nik_hash`)."""

    __tablename__ = "worker"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: HMAC-SHA256 of the NIK with the deployment's key: equality lookup without the NIK.
    nik_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    #: AES-GCM nonce + ciphertext of the NIK.
    nik_ciphertext: Mapped[bytes] = mapped_column(LargeBinary(64))
    #: Masked form (3201********0001), safe to show and log.
    nik_masked: Mapped[str] = mapped_column(String(16))
    full_name: Mapped[str] = mapped_column(String(120))
    birth_date: Mapped[date] = mapped_column(Date)
    sex: Mapped[Sex] = mapped_column(_enum(Sex, "sex"))
    phone_e164: Mapped[str | None] = mapped_column(String(20))
    village: Mapped[str] = mapped_column(String(120))
    district: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Sponsorship(Base):
    """An ASN's sponsorship of one worker, from enrollment to card and dues."""

    __tablename__ = "sponsorship"
    __table_args__ = (
        # SPEC 3: at most one open sponsorship per worker, across all OPDs.
        Index(
            "uq_sponsorship_open_worker",
            "worker_id",
            unique=True,
            sqlite_where=text("status NOT IN ('lapsed', 'ended')"),
            postgresql_where=text("status NOT IN ('lapsed', 'ended')"),
        ),
        Index("ix_sponsorship_opd_status", "opd_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"))
    asn_id: Mapped[int] = mapped_column(ForeignKey("asn.id"), index=True)
    #: The sponsoring ASN's OPD at enrollment: the PIC who handles it.
    opd_id: Mapped[int] = mapped_column(ForeignKey("opd.id"))
    occupation: Mapped[Occupation] = mapped_column(_enum(Occupation, "occupation"))
    plan: Mapped[PaymentPlan] = mapped_column(_enum(PaymentPlan, "payment_plan"))
    first_month: Mapped[date] = mapped_column(Date)
    status: Mapped[SponsorshipStatus] = mapped_column(
        _enum(SponsorshipStatus, "sponsorship_status")
    )
    worker_consent: Mapped[WorkerConsent] = mapped_column(_enum(WorkerConsent, "worker_consent"))
    #: The ASN confirmed a birth date that differs from the one in the NIK.
    birth_date_differs_from_nik: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    return_reason: Mapped[str | None] = mapped_column(Text)
    kpj: Mapped[str | None] = mapped_column(String(20))
    end_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status_changed_at: Mapped[datetime] = mapped_column(UtcDateTime())

    worker: Mapped[Worker] = relationship(lazy="raise")
    asn: Mapped[Asn] = relationship(lazy="raise")
    opd: Mapped[Opd] = relationship(lazy="raise")


class ConsentRecord(Base):
    """Who agreed to what text version, when, over which channel (SPEC 7)."""

    __tablename__ = "consent_record"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[ConsentSubject] = mapped_column(_enum(ConsentSubject, "consent_subject"))
    #: The ASN or worker id, by `subject`; NULL for a consent given before the ASN row exists.
    subject_id: Mapped[int | None] = mapped_column(Integer)
    purpose: Mapped[ConsentPurpose] = mapped_column(_enum(ConsentPurpose, "consent_purpose"))
    text_version: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id"), index=True)
    sponsorship_id: Mapped[int | None] = mapped_column(ForeignKey("sponsorship.id"))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Conversation(Base):
    """Where a person is in a flow; one row per channel account, locked per event."""

    __tablename__ = "conversation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id"), unique=True)
    flow: Mapped[str | None] = mapped_column(String(32))
    step: Mapped[str | None] = mapped_column(String(32))
    #: The flow's answers so far (the draft).
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Steps visited, for "kembali" (back).
    history: Mapped[list[str]] = mapped_column(JSON)
    #: A parked flow {flow, step, data, history} offered for resumption.
    draft: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Bumped on every change; also tags the buttons of the current question so
    #: a button from an older message is recognised as stale.
    version: Mapped[int] = mapped_column(Integer)
    #: Time of the person's last inbound event (idle drafts; WhatsApp's 24-hour window).
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ProcessedUpdate(Base):
    """Inbound updates already applied: the same update id twice has one effect."""

    __tablename__ = "processed_update"
    __table_args__ = (UniqueConstraint("channel", "update_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    update_id: Mapped[str] = mapped_column(String(128))
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class FailedUpdate(Base):
    """An inbound update the engine failed on repeatedly, parked so the bot moves on.

    The raw payload may hold a NIK, so it is stored encrypted (`NikCipher`).
    Operators see these with `sertakan failed list`.
    """

    __tablename__ = "failed_update"
    __table_args__ = (UniqueConstraint("channel", "update_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    update_id: Mapped[str] = mapped_column(String(128))
    sender_id: Mapped[str | None] = mapped_column(String(64))
    payload_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    #: Exception type name only: messages can quote user data.
    error_type: Mapped[str] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime())
