"""SQLAlchemy 2 models. Alembic migrations in storage/migrations mirror these.

Times are stored as aware UTC datetimes; money as integer rupiah; the NIK only
as ciphertext plus a keyed hash (PRODUCT 7).
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
    Double,
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

from domain.tariff import FundingSource
from domain.vocabulary import (
    OCCUPATION_TEXT_MAX,
    AskerRole,
    BatchStatus,
    Channel,
    ConsentMethod,
    ConsentPurpose,
    ConsentSubject,
    DeliveryStatus,
    EmploymentType,
    ImportStatus,
    Language,
    Occupation,
    OutboxStatus,
    PaymentPlan,
    PaymentStatus,
    Relationship,
    ReturnReason,
    Sex,
    SponsorshipStatus,
    TicketAuthor,
    TicketStatus,
    WorkerConsent,
)

#: A person's id on a channel: a Telegram id, a WhatsApp wa_id, or a WhatsApp
#: business-scoped user id (a country code, a dot and up to 128 characters).
PERSON_ID_LENGTH = 160

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
    external_id: Mapped[str] = mapped_column(String(PERSON_ID_LENGTH))
    language: Mapped[Language] = mapped_column(_enum(Language, "language"))
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Asn(Base):
    """A registered civil servant (sponsor)."""

    __tablename__ = "asn"
    __table_args__ = (
        # The coverage page: ASN registered and sponsoring per OPD from this index alone.
        Index("ix_asn_opd_open", "opd_id", "open_sponsorships"),
    )

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
    #: How many of this ASN's sponsorships are open (any status but lapsed and ended):
    #: kept by the triggers of migration 0015_coverage_counts, never written by Python.
    open_sponsorships: Mapped[int] = mapped_column(Integer, server_default=text("0"))

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
    #: Indexed: a WhatsApp sender is recognised as a worker by this number (PRODUCT 4.6).
    phone_e164: Mapped[str | None] = mapped_column(String(20), index=True)
    #: Place of birth as on the KTP; None for workers enrolled before it was asked.
    birth_place: Mapped[str | None] = mapped_column(String(120))
    #: Street, house number, RT/RW or hamlet; None for workers enrolled before it was asked.
    street_address: Mapped[str | None] = mapped_column(String(200))
    village: Mapped[str] = mapped_column(String(120))
    district: Mapped[str] = mapped_column(String(120))
    #: Regency or city (kabupaten/kota); None for workers enrolled before it was asked.
    regency: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: Set when the worker's personal data was erased on their request (PRODUCT 7).
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


#: PRODUCT 3's "open" sponsorship (any status but lapsed/ended) as literal SQL, the
#: same text as the partial unique index's predicate: SQLite uses a partial
#: index only when the query's condition matches it, and `status IN (...)` with
#: bound values does not (a full scan: 9.9 ms per lookup at 144,000 rows,
#: against 0.004 ms). Queries for open sponsorships use this.
OPEN_SPONSORSHIP_SQL = "status NOT IN ('lapsed', 'ended')"
SPONSORSHIP_IS_OPEN = text("sponsorship." + OPEN_SPONSORSHIP_SQL)


class Sponsorship(Base):
    """An ASN's sponsorship of one worker, from enrollment to card and dues."""

    __tablename__ = "sponsorship"
    __table_args__ = (
        # PRODUCT 3: at most one open sponsorship per worker, across all OPDs.
        Index(
            "uq_sponsorship_open_worker",
            "worker_id",
            unique=True,
            sqlite_where=text(OPEN_SPONSORSHIP_SQL),
            postgresql_where=text(OPEN_SPONSORSHIP_SQL),
        ),
        # The web queue's keyset order within an OPD's status (storage/web_queries.py);
        # also every look-up by OPD and status (an index on those two alone was its
        # prefix, dropped by migration 0018).
        Index("ix_sponsorship_queue", "opd_id", "status", "status_changed_at", "id"),
        Index("ix_sponsorship_kpj", "kpj"),
        # The coverage page (storage/coverage.py), read afresh: workers per OPD and status,
        # the lapsed/ended ones DISTINCT, and the paid-until distribution, each from this
        # index alone, grouped in its order (no sort).
        Index(
            "ix_sponsorship_coverage",
            "status",
            "opd_id",
            "paid_until",
            "first_month",
            "paid_after_gap",
            "worker_id",
        ),
        # Its weekly series: enrollments, cards and lapses of the last weeks by index ranges.
        Index("ix_sponsorship_created_at", "created_at"),
        Index("ix_sponsorship_kpj_imported_at", "kpj_imported_at"),
        Index("ix_sponsorship_status_changed", "status", "status_changed_at"),
        # A worker's sponsorships in one status: the `coverage_area` triggers' probe.
        Index("ix_sponsorship_worker_status", "worker_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"))
    asn_id: Mapped[int] = mapped_column(ForeignKey("asn.id"), index=True)
    #: The sponsoring ASN's OPD at enrollment: the PIC who handles it.
    opd_id: Mapped[int] = mapped_column(ForeignKey("opd.id"))
    #: Not named `relationship`: that is SQLAlchemy's function, used in this class body.
    relationship_to_asn: Mapped[Relationship] = mapped_column(
        _enum(Relationship, "relationship"), server_default=Relationship.OTHER.value
    )
    #: None for a family member enrolled before occupation and relationship were asked apart.
    occupation: Mapped[Occupation | None] = mapped_column(_enum(Occupation, "occupation"))
    #: The occupation typed when `occupation` is OTHER (cleaned, at most OCCUPATION_TEXT_MAX).
    occupation_text: Mapped[str | None] = mapped_column(String(OCCUPATION_TEXT_MAX))
    plan: Mapped[PaymentPlan] = mapped_column(_enum(PaymentPlan, "payment_plan"))
    first_month: Mapped[date] = mapped_column(Date)
    status: Mapped[SponsorshipStatus] = mapped_column(
        _enum(SponsorshipStatus, "sponsorship_status")
    )
    worker_consent: Mapped[WorkerConsent] = mapped_column(_enum(WorkerConsent, "worker_consent"))
    #: How the worker was last asked to consent, and when: the PIC sees why it waits.
    consent_requested_via: Mapped[ConsentMethod | None] = mapped_column(
        _enum(ConsentMethod, "consent_method")
    )
    consent_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    #: How the worker's answer came (WhatsApp, the Telegram link, a signed form).
    consent_method: Mapped[ConsentMethod | None] = mapped_column(
        _enum(ConsentMethod, "consent_method")
    )
    #: The ASN confirmed a birth date that differs from the one in the NIK.
    birth_date_differs_from_nik: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    return_reason: Mapped[str | None] = mapped_column(Text)
    #: The common reason chosen by the PIC (None for a typed reason).
    return_reason_code: Mapped[ReturnReason | None] = mapped_column(
        _enum(ReturnReason, "return_reason")
    )
    #: Times the ASN sent a returned enrollment back to the queue.
    correction_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    verified_by_pic_id: Mapped[int | None] = mapped_column(ForeignKey("pic.id"))
    #: The collective file this enrollment went out in (PRODUCT 4.5).
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("submission_batch.id"), index=True)
    kpj: Mapped[str | None] = mapped_column(String(20))
    #: Who pays the dues: decides the tariff row (a discount may exclude regional budgets).
    funding_source: Mapped[FundingSource] = mapped_column(
        _enum(FundingSource, "funding_source"),
        default=FundingSource.ASN_PERSONAL,
        server_default=FundingSource.ASN_PERSONAL.value,
    )
    #: A plan change the ASN asked for, effective from `next_plan_from` (a month start).
    next_plan: Mapped[PaymentPlan | None] = mapped_column(_enum(PaymentPlan, "payment_plan"))
    next_plan_from: Mapped[date | None] = mapped_column(Date)
    kpj_imported_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    card_handed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    end_reason: Mapped[str | None] = mapped_column(Text)
    #: A sponsorship the ASN stopped: the last month it covers (the last paid one; None:
    #: nothing was paid). The worker stays protected to that month's end.
    ended_month: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status_changed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: Derived from the confirmed payments (`domain.dues.PaidRun`), written only by
    #: `storage.paid_until.settle`: the last month of the unbroken paid run (None: none)...
    paid_until: Mapped[date | None] = mapped_column(Date)
    #: ...and whether confirmed months lie beyond the first unpaid one.
    paid_after_gap: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )

    worker: Mapped[Worker] = relationship(lazy="raise")
    asn: Mapped[Asn] = relationship(lazy="raise")
    opd: Mapped[Opd] = relationship(lazy="raise")


class ConsentRecord(Base):
    """Who agreed to what text version, when, over which channel (PRODUCT 7)."""

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
    #: A worker's consent: how it came (None for the ASN's own consents).
    method: Mapped[ConsentMethod | None] = mapped_column(_enum(ConsentMethod, "consent_method"))
    #: A signed form's scan, by the channel's file reference (as a payment receipt is
    #: stored: a document's prefixed "document:"); the channel is the account's.
    evidence_file_ref: Mapped[str | None] = mapped_column(String(200))


class ConsentLink(Base):
    """A Telegram link t.me/<bot>?start=<token> that asks one worker for consent.

    Only the token's SHA-256 is stored (the token itself is 256 random bits, shown
    once to the ASN): a database copy cannot be turned into working links. A link
    serves one sponsorship only and stops working at `expires_at` or once the
    worker answered; the ASN may make another (earlier ones keep working until
    they expire).
    """

    __tablename__ = "consent_link"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sponsorship_id: Mapped[int] = mapped_column(ForeignKey("sponsorship.id"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_by_account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: When the worker answered through it.
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


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
    sender_id: Mapped[str | None] = mapped_column(String(PERSON_ID_LENGTH))
    payload_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    #: Exception type name only: messages can quote user data.
    error_type: Mapped[str] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Pic(Base):
    """An OPD's PIC appointment (PRODUCT 4.5, 6).

    Appointed by the administrator for a channel account (Telegram id, WhatsApp
    number) or for a phone number not yet seen, which binds to the first account
    that proves it (a WhatsApp sender with that number); or
    created when somebody redeems an invite code. `removed_at` ends it; rows
    are kept for the audit trail.
    """

    __tablename__ = "pic"
    __table_args__ = (
        # One current appointment per account (a PIC serves one OPD).
        Index(
            "uq_pic_active_account",
            "channel_account_id",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    opd_id: Mapped[int] = mapped_column(ForeignKey("opd.id"), index=True)
    channel_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_account.id"))
    #: Set when appointed by phone; matched against accounts until bound.
    phone_e164: Mapped[str | None] = mapped_column(String(20), index=True)
    appointed_by: Mapped[str] = mapped_column(String(120))
    appointed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    removed_by: Mapped[str | None] = mapped_column(String(120))

    opd: Mapped[Opd] = relationship(lazy="raise")


class InviteCode(Base):
    """A one-time code that makes whoever redeems it a PIC of the OPD."""

    __tablename__ = "invite_code"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    opd_id: Mapped[int] = mapped_column(ForeignKey("opd.id"))
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    used_by_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_account.id"))


class AuditLog(Base):
    """Every PIC and administrator action: who, what, which record, when (PRODUCT 7).

    `details` never holds a NIK (masked forms only).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    #: "pic", "admin" or "asn"/"worker" for actions that touch a PIC's records.
    actor_type: Mapped[str] = mapped_column(String(16))
    #: pic id, channel account id or the administrator's login name.
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64))
    record_type: Mapped[str] = mapped_column(String(32))
    record_id: Mapped[str | None] = mapped_column(String(64))
    opd_id: Mapped[int | None] = mapped_column(ForeignKey("opd.id"), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class SubmissionBatch(Base):
    """One collective file of an OPD sent to BPJS (PRODUCT 1 step 2)."""

    __tablename__ = "submission_batch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    opd_id: Mapped[int] = mapped_column(ForeignKey("opd.id"), index=True)
    #: Human-facing number, "<OPD code>-<year>-<sequence>" (e.g. DINKES-2026-003).
    number: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[BatchStatus] = mapped_column(_enum(BatchStatus, "batch_status"))
    row_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(120))
    submitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class KpjImport(Base):
    """A KPJ file between preview and confirmation; nothing else is written before.

    `matches` holds [sponsorship_id, kpj] pairs; `summary` the preview counts and
    rejected rows (masked NIKs only).
    """

    __tablename__ = "kpj_import"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    opd_id: Mapped[int] = mapped_column(ForeignKey("opd.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(120))
    file_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[ImportStatus] = mapped_column(_enum(ImportStatus, "import_status"))
    matches: Mapped[list[Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Outbox(Base):
    """One proactive message, written in the transaction of the change that caused it.

    `dedupe_key` is unique: the same notice planned twice is one row. The
    dispatcher claims due rows (`not_before` passed, status pending, or sending
    with an expired `claimed_until` after a crash), sends them and records the
    outcome. `body` is rendered in the recipient's language at planning time;
    `template` and `params` are for channels that need an approved template
    outside a conversation window (WhatsApp).
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "not_before"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    #: The channel's id of the person (Telegram chat id, WhatsApp wa_id, console user).
    recipient: Mapped[str] = mapped_column(String(PERSON_ID_LENGTH))
    #: What kind of notice ("card_ready", "returned", "digest", ...).
    kind: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[OutboxStatus] = mapped_column(_enum(OutboxStatus, "outbox_status"))
    not_before: Mapped[datetime] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    #: The platform's id of the message as sent (WhatsApp `wamid`), for status webhooks.
    provider_message_id: Mapped[str | None] = mapped_column(String(128), index=True)
    #: What the platform last reported (WhatsApp sent/delivered/read/failed); never moves back.
    delivery_status: Mapped[DeliveryStatus | None] = mapped_column(
        _enum(DeliveryStatus, "delivery_status")
    )
    delivery_status_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    #: Send only as the approved template (WhatsApp said the 24-hour window is closed: 131047).
    template_only: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )


class PendingReply(Base):
    """Replies to one inbound event, written in the event's transaction and deleted
    once the platform accepted every part (PRODUCT 7: nothing kept after delivery).

    A reply that Telegram or WhatsApp refused for a while (5xx, timeout, 429,
    130429) waits here and is sent again, in order per chat, without re-running
    the step. The payload (the replies and the language they are rendered in)
    may quote a masked NIK or hold the collective file: it is encrypted like a
    parked update. `parts_sent` counts the rendered messages already accepted,
    so a retry continues with the next one instead of repeating them.
    """

    __tablename__ = "pending_reply"
    __table_args__ = (Index("ix_pending_reply_chat", "channel", "chat_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    #: The person the replies go to (Telegram chat id, WhatsApp wa_id).
    chat_id: Mapped[str] = mapped_column(String(PERSON_ID_LENGTH))
    #: The inbound update they answer (for logs; never its content).
    update_id: Mapped[str] = mapped_column(String(128))
    payload_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    parts_sent: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    not_before: Mapped[datetime] = mapped_column(UtcDateTime())
    #: A deliverer holds the row until then (a crashed process's rows are taken again).
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200))


class WhatsappInbound(Base):
    """A WhatsApp message as the webhook received it, before the engine handled it.

    The webhook answers 200 only after this row committed (Meta retries for days,
    so whatever is here is never asked for again); `message_id` (the `wamid`) is
    unique, so a delivery repeated or racing itself is one row. The payload may
    hold a NIK: it is stored encrypted, like a parked update. A background task
    feeds unprocessed rows to the engine per sender in the order they were sent
    (`sent_at`, then arrival) and sets `processed_at`.
    """

    __tablename__ = "whatsapp_inbound"
    __table_args__ = (
        Index("ix_whatsapp_inbound_pending", "processed_at", "id"),
        # A sender's rows: claims check their pending and their newest processed ones.
        Index("ix_whatsapp_inbound_sender", "sender_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(128), unique=True)
    #: The sender as the engine knows them (wa_id, or the business-scoped user id).
    sender_id: Mapped[str] = mapped_column(String(PERSON_ID_LENGTH))
    payload_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: WhatsApp's `timestamp` of the message (when the person sent it, whole seconds):
    #: a sender's rows are handed out in (sent_at, id) order.
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    #: A processor holds the row until then (a crashed processor's rows are taken again).
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(String(200))


class TelegramInbound(Base):
    """A Telegram update fetched by long polling and not handled yet (its journal).

    The poller writes the updates of a `getUpdates` answer here in one short
    transaction and only then moves the offset past them (so Telegram forgets
    them), then fetches again at once; the updates are handled from here, per
    person in order, and the row is deleted once handled (or parked). After a
    crash the rows left are handled first at the next start. `update_id` is the
    key: an update delivered again while its row is here is one row. The
    payload may hold a NIK: it is stored encrypted, like a parked update.
    """

    __tablename__ = "telegram_inbound"

    update_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    payload_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Payment(Base):
    """Dues the payer recorded for consecutive months of one sponsorship (PRODUCT 4.4).

    Paid-until and next-due are derived from the confirmed payments, never typed
    (`sponsorship.paid_until` is kept by `storage.paid_until.settle` from them).
    A payroll month marked by the PIC is a payment confirmed at once.
    """

    __tablename__ = "payment"
    __table_args__ = (Index("ix_payment_sponsorship_status", "sponsorship_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sponsorship_id: Mapped[int] = mapped_column(ForeignKey("sponsorship.id"))
    #: The first month covered (a month start) and how many consecutive months.
    first_month: Mapped[date] = mapped_column(Date)
    months: Mapped[int] = mapped_column(Integer)
    #: Rupiah, computed from the tariff for those months and the funding source.
    amount: Mapped[int] = mapped_column(Integer)
    status: Mapped[PaymentStatus] = mapped_column(_enum(PaymentStatus, "payment_status"))
    #: The receipt photo or document, by the channel's file reference.
    receipt_file_ref: Mapped[str | None] = mapped_column(String(200))
    recorded_by_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_account.id"))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    decided_by_pic_id: Mapped[int | None] = mapped_column(ForeignKey("pic.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    reject_reason: Mapped[str | None] = mapped_column(Text)
    #: True for a payroll month the PIC marked paid for the whole OPD.
    payroll: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class KeyCheck(Base):
    """The NIK key this database's ciphertexts and lookup hashes belong to (issue 11).

    One row per key id: `kcv` is the key's check value (`NikCipher.check_value`,
    an HMAC of a constant), so a start with another key is refused before it
    writes anything. Several rows are room for a key ring (rotation, later).
    """

    __tablename__ = "key_check"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    kcv: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Administrator(Base):
    """A chat account of the program's administrator (PRODUCT 2): gets the daily digest of
    OPDs with no PIC and the questions sent to such OPDs ("Tanya PIC").

    Appointed and removed from the command line (`sertakan admin`); `removed_at`
    ends an appointment and the row stays for the audit trail.
    """

    __tablename__ = "administrator"
    __table_args__ = (
        # One current appointment per account.
        Index(
            "uq_administrator_active_account",
            "channel_account_id",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id"))
    appointed_by: Mapped[str] = mapped_column(String(120))
    appointed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    removed_by: Mapped[str | None] = mapped_column(String(120))


class Ticket(Base):
    """A question an ASN or a worker sent to their OPD's PIC ("Tanya PIC", PRODUCT 4.7).

    The OPD's current PICs answer it; while the OPD has none, the administrators
    do. The asker is told on the channel of `asker_account_id`. A worker's
    question names the worker (`worker_id`): erasing the worker deletes it.
    """

    __tablename__ = "ticket"
    __table_args__ = (Index("ix_ticket_opd_status", "opd_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    opd_id: Mapped[int] = mapped_column(ForeignKey("opd.id"))
    asker_account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id"), index=True)
    asker_role: Mapped[AskerRole] = mapped_column(_enum(AskerRole, "asker_role"))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("worker.id"), index=True)
    status: Mapped[TicketStatus] = mapped_column(_enum(TicketStatus, "ticket_status"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: Time of the newest message (lists show the latest first).
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    closed_by: Mapped[str | None] = mapped_column(String(120))


class TicketMessage(Base):
    """One message of a question's thread: the question, then answers."""

    __tablename__ = "ticket_message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    author: Mapped[TicketAuthor] = mapped_column(_enum(TicketAuthor, "ticket_author"))
    #: The channel account that wrote it (None once that account is erased).
    author_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_account.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ProgramLeader(Base):
    """A program leader (issue 13): reads every OPD's pages on the web, changes nothing.

    Appointed and removed from the command line (`sertakan leader`) for a chat
    account, which asks the bot for a sign-in link ("/web"); `removed_at` ends it.
    """

    __tablename__ = "program_leader"
    __table_args__ = (
        Index(
            "uq_program_leader_active_account",
            "channel_account_id",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id"))
    appointed_by: Mapped[str] = mapped_column(String(120))
    appointed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    removed_by: Mapped[str | None] = mapped_column(String(120))


class WebSignInLink(Base):
    """A one-time web sign-in link (issue 13): only the token's SHA-256 is kept.

    `role` is "pic", "leader" or "admin"; a PIC's and a leader's link is bound to
    their chat account (the role is derived again from it when the link is used),
    an administrator's to the login that ran `sertakan web link --admin`.
    """

    __tablename__ = "web_sign_in_link"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    channel_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_account.id"))
    admin_login: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class WebSession(Base):
    """A signed-in web session, kept server-side; the cookie holds a random token whose
    SHA-256 is `token_hash`. Ends when idle too long or on sign-out (`ended_at`)."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    channel_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_account.id"))
    admin_login: Mapped[str | None] = mapped_column(String(120))
    csrf_token: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class WebSignInAttempt(Base):
    """One web sign-in attempt of the last minute (storage/web_access.py): the rate limit
    every process shares. Keyed by the SHA-256 of the client's address, not the address."""

    __tablename__ = "web_sign_in_attempt"
    __table_args__ = (
        Index("ix_web_sign_in_attempt_address", "address_hash", "attempted_at"),
        Index("ix_web_sign_in_attempt_at", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64))
    attempted_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SendBudget(Base):
    """A channel's send schedule shared by all processes on PostgreSQL (storage/send_budget.py):
    `tat` is when its next send may start, in PostgreSQL's epoch seconds."""

    __tablename__ = "send_budget"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    tat: Mapped[float] = mapped_column(Double)


class SendSpacing(Base):
    """When a recipient may get the next notice on a channel (storage/send_budget.py), in
    PostgreSQL's epoch seconds; rows in the past are pruned."""

    __tablename__ = "send_spacing"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(64), primary_key=True)
    free_at: Mapped[float] = mapped_column(Double)


class PlannerRun(Base):
    """One attempt at one scheduled planning run (`storage.planner_runs`).

    `job` ("dues_reminders", "pic_digest", "housekeeping") and `run_key` (the
    local date) name the run; at most one attempt per run is `running` (partial
    unique index) and holds the lease until `lease_until`, renewed after every
    chunk. An attempt whose lease ran out (its process died) is `abandoned` by
    the next process's tick, which starts its own.
    """

    __tablename__ = "planner_run"
    __table_args__ = (
        Index(
            "uq_planner_run_running",
            "job",
            "run_key",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_planner_run_job_key", "job", "run_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(32))
    run_key: Mapped[str] = mapped_column(String(32))
    #: Who ran it: host, process id and a random part (`planner_runs.owner_id`).
    owner: Mapped[str] = mapped_column(String(120))
    #: running, done, failed, abandoned.
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    lease_until: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    #: Chunks planned so far (the reminders: sponsorships by id, `planner_chunk_size` each).
    chunks: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    #: Rows the run wrote (outbox rows, deleted rows for housekeeping).
    rows: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    #: Why it failed (the exception's type and message), for `sertakan plan status`.
    error: Mapped[str | None] = mapped_column(Text)


class CoverageArea(Base):
    """The province's workers per place and sponsorship status: the coverage page's
    villages table, kept by database triggers (migration 0015_coverage_counts).

    `workers` counts the distinct (worker, status) pairs among the sponsorships
    whose worker lives in this village (`erased`: every erased worker, one row
    with empty names): a worker counts once per status they hold, however many
    lapsed or ended sponsorships they have. The triggers on `sponsorship`
    (insert, delete, update of status or worker) and `worker` (update of the
    address or `erased_at`) keep it equal to that GROUP BY at every commit,
    bulk statements included; no Python code writes it (see
    docs/ARCHITECTURE.md, "Coverage read afresh"). Rows that fell to 0 stay.
    """

    __tablename__ = "coverage_area"

    erased: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    #: The worker's regency ('' when none, and for erased workers).
    regency: Mapped[str] = mapped_column(String(120), primary_key=True)
    district: Mapped[str] = mapped_column(String(120), primary_key=True)
    village: Mapped[str] = mapped_column(String(120), primary_key=True)
    status: Mapped[SponsorshipStatus] = mapped_column(
        _enum(SponsorshipStatus, "sponsorship_status"), primary_key=True
    )
    workers: Mapped[int] = mapped_column(Integer)


#: `CoverageGroup.paid_until` of a sponsorship with no paid month (a key cannot be NULL).
NO_PAID_MONTH = date(1, 1, 1)


class CoverageGroup(Base):
    """Sponsorships per (status, OPD, first month, paid-until, gap): the coverage page's
    workers per OPD and status and its paid-until distribution, kept by database
    triggers (migration 0015_coverage_counts), never written by Python.

    `paid_until` is `NO_PAID_MONTH` where the sponsorship's is None. An open
    sponsorship is its worker's only open one, so for open statuses `sponsorships`
    is also the number of workers. 3,735 rows for the bench's 144,000 sponsorships.
    """

    __tablename__ = "coverage_group"

    status: Mapped[SponsorshipStatus] = mapped_column(
        _enum(SponsorshipStatus, "sponsorship_status"), primary_key=True
    )
    opd_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_month: Mapped[date] = mapped_column(Date, primary_key=True)
    paid_until: Mapped[date] = mapped_column(Date, primary_key=True)
    paid_after_gap: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    sponsorships: Mapped[int] = mapped_column(Integer)
