"""The program's own words as enums, shared by every package."""

from __future__ import annotations

from enum import StrEnum


class Sex(StrEnum):
    MALE = "male"
    FEMALE = "female"


class Channel(StrEnum):
    CONSOLE = "console"
    TELEGRAM = "telegram"
    WHATSAPP = "whatsapp"


class Language(StrEnum):
    INDONESIAN = "id"
    ENGLISH = "en"


class Relationship(StrEnum):
    """How the sponsored worker is related to the sponsoring ASN (PRODUCT 4.2).

    Kept apart from the occupation: BPJS registers what the worker does, the
    program reports whom ASN sponsor.
    """

    #: Works for the ASN's household (household assistant, driver, gardener ...).
    EMPLOYEE = "employee"
    FAMILY = "family"
    #: A neighbour or someone else working around the ASN.
    NEIGHBOUR = "neighbour"
    OTHER = "other"


#: Most characters of an occupation typed after "other" (the collective file's cell).
OCCUPATION_TEXT_MAX = 60


class Occupation(StrEnum):
    """What the sponsored worker does for a living (PRODUCT 4.2).

    OTHER comes with the occupation typed as text (`Sponsorship.occupation_text`).
    FAMILY_MEMBER is a relationship, not an occupation: it is kept only so rows
    from before the two were asked apart still read; it is never offered.
    """

    FAMILY_MEMBER = "family_member"
    HOUSEHOLD_ASSISTANT = "household_assistant"
    GARDEN_WORKER = "garden_worker"
    DRIVER = "driver"
    HOUSE_GUARD = "house_guard"
    PLACE_OF_WORSHIP_WORKER = "place_of_worship_worker"
    FISHER = "fisher"
    OJOL_RIDER = "ojol_rider"
    OTHER = "other"


#: The occupations an ASN chooses from, in the order offered.
OFFERED_OCCUPATIONS: tuple[Occupation, ...] = tuple(
    occupation for occupation in Occupation if occupation is not Occupation.FAMILY_MEMBER
)


class SponsorshipStatus(StrEnum):
    WAITING_FOR_PIC = "waiting_for_pic"
    RETURNED = "returned"
    ACCEPTED = "accepted"
    SUBMITTED = "submitted"
    ACTIVE = "active"
    CARD_HANDED_OVER = "card_handed_over"
    LAPSED = "lapsed"
    ENDED = "ended"

    @property
    def is_open(self) -> bool:
        """True while the sponsorship holds the worker (PRODUCT 3: one open sponsorship each)."""
        return self not in (SponsorshipStatus.LAPSED, SponsorshipStatus.ENDED)


OPEN_STATUSES: tuple[SponsorshipStatus, ...] = tuple(s for s in SponsorshipStatus if s.is_open)


class PaymentPlan(StrEnum):
    """How the dues of a sponsorship are paid (PRODUCT 3).

    Semiannual and annual prepayment exist only when configuration allows them
    (`domain.dues.allowed_plans`); payroll deduction pays one month at a time.
    """

    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    PAYROLL_DEDUCTION = "payroll_deduction"
    SEMIANNUAL = "semiannual"
    ANNUAL = "annual"

    @property
    def months_per_payment(self) -> int:
        """How many consecutive months one payment under this plan covers."""
        return _MONTHS_PER_PAYMENT[self]


_MONTHS_PER_PAYMENT: dict[PaymentPlan, int] = {
    PaymentPlan.MONTHLY: 1,
    PaymentPlan.QUARTERLY: 3,
    PaymentPlan.PAYROLL_DEDUCTION: 1,
    PaymentPlan.SEMIANNUAL: 6,
    PaymentPlan.ANNUAL: 12,
}


class ConsentSubject(StrEnum):
    ASN = "asn"
    WORKER = "worker"


class ConsentPurpose(StrEnum):
    PRIVACY_NOTICE = "privacy_notice"
    PAYROLL_DEDUCTION = "payroll_deduction"
    WORKER_ENROLLMENT = "worker_enrollment"


class WorkerConsent(StrEnum):
    """The worker's answer to the consent request, as shown on the enrollment."""

    NOT_REQUESTED = "not_requested"
    PENDING = "pending"
    GIVEN = "given"
    REFUSED = "refused"


class ConsentMethod(StrEnum):
    """How a worker is asked for consent and how their answer came (PRODUCT 4.6)."""

    #: The consent request on WhatsApp ("YA" / "TIDAK").
    WHATSAPP = "whatsapp"
    #: A Telegram link t.me/<bot>?start=<token> the ASN forwarded to the worker.
    TELEGRAM_LINK = "telegram_link"
    #: A printed form the worker signed; the PIC recorded its scan.
    FORM = "form"


class EmploymentType(StrEnum):
    """ASN kind, told apart by the NIP layout (PRODUCT 3)."""

    PNS = "pns"
    PPPK = "pppk"


class BatchStatus(StrEnum):
    """A collective file sent to BPJS (PRODUCT 4.5)."""

    #: The file was generated; the PIC has not yet confirmed sending it.
    EXPORTED = "exported"
    #: The PIC confirmed the file went to BPJS: its rows are "submitted".
    SUBMITTED = "submitted"


class ImportStatus(StrEnum):
    """A KPJ file from BPJS between its preview and the PIC's decision."""

    PREVIEWED = "previewed"
    APPLIED = "applied"
    CANCELLED = "cancelled"


class OutboxStatus(StrEnum):
    """A proactive message's life in the outbox (PRODUCT 5)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class DeliveryStatus(StrEnum):
    """What the platform reports about a sent message (WhatsApp status webhooks).

    Statuses arrive in any order; `rank` orders them so a row never moves
    backwards: a late "sent" after "read" changes nothing. "failed" outranks
    "sent" only (a message delivered or read did reach the person).
    """

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        return _DELIVERY_RANK[self]


_DELIVERY_RANK = {
    DeliveryStatus.SENT: 1,
    DeliveryStatus.FAILED: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.READ: 4,
}


class ReturnReason(StrEnum):
    """Common reasons a PIC returns an enrollment; each names the fields to correct."""

    NIK = "nik"
    NAME = "name"
    BIRTH_DATE = "birth_date"
    ADDRESS = "address"
    PHONE = "phone"
    OCCUPATION = "occupation"
    OTHER = "other"

    @property
    def fields(self) -> tuple[str, ...]:
        """The enrollment fields the ASN is asked to look at (empty: any field)."""
        return {
            ReturnReason.NIK: ("nik",),
            ReturnReason.NAME: ("name",),
            ReturnReason.BIRTH_DATE: ("birth_date",),
            ReturnReason.ADDRESS: ("street_address", "village", "district", "regency"),
            ReturnReason.OCCUPATION: ("occupation",),
            ReturnReason.PHONE: ("phone",),
            ReturnReason.OTHER: (),
        }[self]


class PaymentStatus(StrEnum):
    """A recorded payment of dues (PRODUCT 4.4): the PIC confirms or rejects it."""

    RECORDED = "recorded"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class TicketStatus(StrEnum):
    """A question to a person ("Tanya PIC"): open until the PIC (or administrator) closes it."""

    OPEN = "open"
    CLOSED = "closed"


class TicketAuthor(StrEnum):
    """Who wrote a message of a question's thread."""

    #: The ASN or worker who asked.
    ASKER = "asker"
    PIC = "pic"
    #: An administrator's chat account (for an OPD without a PIC).
    ADMIN = "admin"


class AskerRole(StrEnum):
    """As whom a person asked: a registered ASN, or a worker known by their WhatsApp number."""

    ASN = "asn"
    WORKER = "worker"
