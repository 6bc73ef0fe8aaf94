"""Everything a step may use while handling one event, bound to its transaction."""

from __future__ import annotations

import dataclasses
import functools
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain.eligibility import AgeBounds
from domain.payment_channels import PaymentChannel
from domain.tariff import TariffTable
from domain.vocabulary import Channel, Language, PaymentPlan
from domain.workdays import WorkCalendar
from handlers.i18n import Translator
from handlers.notices import Notices
from handlers.types import InboundEvent, Option
from storage.collective_columns import DEFAULT_COLUMN_MAP, ColumnMap
from storage.collective_file import DEFAULT_BUDGET, FileBudget, KpjFileError, KpjRow
from storage.conversation_store import ConversationState
from storage.crypto import NikCipher
from storage.isolated_read import DEFAULT_LIMITS, ReadLimits
from storage.opd_repository import OpdRepository
from storage.repositories import (
    AsnProfile,
    AsnRepository,
    ConsentRepository,
    SponsorshipRepository,
    WorkerRepository,
)
from storage.roles import PicRole, pic_for_account, remember_display_name

#: A spreadsheet read before the event's transaction: (data rows, empty rows), or the refusal.
FileReading = tuple[list[KpjRow], int] | KpjFileError


@dataclasses.dataclass(slots=True, frozen=True)
class EngineConfig:
    """Program settings the flows need; built from bot settings in the composition root."""

    age_bounds: AgeBounds
    max_workers_per_asn: int
    draft_idle: timedelta
    timezone: ZoneInfo
    default_language: Language
    tariff: TariffTable
    #: Longest typed answer accepted anywhere; longer input is refused with its length.
    max_input_chars: int = 300
    #: Working days and holidays (due dates move off weekends and holidays).
    calendar: WorkCalendar = dataclasses.field(default_factory=lambda: WorkCalendar(()))
    #: How many months after the current one may be paid ahead.
    max_months_ahead: int = 12
    #: Payment plans offered (6- and 12-month prepayment only when configured).
    plans: tuple[PaymentPlan, ...] = (
        PaymentPlan.MONTHLY,
        PaymentPlan.QUARTERLY,
        PaymentPlan.PAYROLL_DEDUCTION,
    )
    #: How much of a KPJ file a PIC sends is read, and the limits of the child reading it.
    kpj_file_budget: FileBudget = DEFAULT_BUDGET
    #: The collective file's columns (PROGRAM_COLLECTIVE_COLUMNS_FILE).
    collective_columns: ColumnMap = DEFAULT_COLUMN_MAP
    kpj_read_limits: ReadLimits = DEFAULT_LIMITS
    #: Where BPJS dues are paid (PROGRAM_PAYMENT_CHANNELS_FILE); empty: "ask your PIC".
    payment_channels: tuple[PaymentChannel, ...] = ()
    #: PROGRAM_ACCEPT_WITHOUT_CONSENT: the PIC may accept an enrollment whose worker
    #: has not consented (default no: it waits, and the PIC sees why).
    accept_without_consent: bool = False
    #: How long a Telegram consent link the ASN forwards to the worker works.
    consent_link_ttl: timedelta = timedelta(days=14)
    #: The Telegram bot's username (TELEGRAM_BOT_USERNAME, or getMe at start-up), for
    #: links t.me/<username>?start=...; empty: the link is shown as "/start <payload>".
    telegram_bot_username: str = ""
    #: Where the web workbench is reached (WEB_BASE_URL, else http://WEB_HOST:WEB_PORT),
    #: for the sign-in links the bot sends.
    web_base_url: str = "http://127.0.0.1:8080"


@dataclasses.dataclass(slots=True)
class Account:
    """The person's channel account as the flows see it."""

    id: int
    language: Language


#: The working copy of the conversation for this event (saved by the engine).
State = ConversationState


class Repositories:
    """The repositories of one unit of work, on the event's connection and transaction.

    The ORM session is opened on first use only: most events touch nothing but
    the conversation row, which the engine reads and writes in Core.
    """

    def __init__(self, connection: AsyncConnection, cipher: NikCipher) -> None:
        self._connection = connection
        self._cipher = cipher
        self._session: AsyncSession | None = None

    @property
    def connection(self) -> AsyncConnection:
        """The event's connection, inside its transaction (for Core statements)."""
        return self._connection

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            # Joins the connection's transaction; the engine commits or rolls back.
            self._session = AsyncSession(
                bind=self._connection, expire_on_commit=False, autoflush=False
            )
        return self._session

    def _open_session(self) -> AsyncSession:
        return self.session

    # The repositories run their Core statements on the connection and open the
    # session only for an ORM entity (storage.repositories).
    @functools.cached_property
    def asns(self) -> AsnRepository:
        return AsnRepository(self._open_session, self._connection)

    @functools.cached_property
    def workers(self) -> WorkerRepository:
        return WorkerRepository(self._open_session, self._cipher, self._connection)

    @functools.cached_property
    def sponsorships(self) -> SponsorshipRepository:
        return SponsorshipRepository(self._open_session, self._connection)

    @functools.cached_property
    def consents(self) -> ConsentRepository:
        return ConsentRepository(self._open_session, self._connection)

    @functools.cached_property
    def opds(self) -> OpdRepository:
        return OpdRepository(self.session)

    @property
    def has_session(self) -> bool:
        return self._session is not None

    async def flush_and_close(self) -> None:
        """Write pending ORM changes into the transaction (before the engine commits)."""
        if self._session is not None:
            await self._session.flush()
            await self._session.close()


@dataclasses.dataclass(slots=True)
class Context:
    event: InboundEvent
    now: datetime
    config: EngineConfig
    t: Translator
    account: Account
    state: State
    repo: Repositories
    cipher: NikCipher
    notices: Notices
    #: A spreadsheet the person sent, already read (in a child process, before the
    #: event's transaction opened): its rows and empty-row count, or why it was refused.
    file_reading: FileReading | None = None
    #: The account was created by this event (`ConversationRecord.created`): no row refers
    #: to it, so it is nobody's ASN, PIC or administrator and those look-ups are skipped;
    #: a WhatsApp account's PIC look-up still runs (an appointment may wait for its phone).
    account_created: bool = False
    _asn: AsnProfile | None = None
    _asn_loaded: bool = False
    _pic: PicRole | None = None
    _pic_loaded: bool = False

    def __post_init__(self) -> None:
        if self.account_created:
            self._asn_loaded = True
            self._pic_loaded = self.event.channel is not Channel.WHATSAPP

    @property
    def today(self) -> date:
        """The date in the province's time zone (rules are about local days)."""
        return self.now.astimezone(self.config.timezone).date()

    async def asn(self) -> AsnProfile | None:
        """The registered ASN behind this account, if any (loaded once per event)."""
        if not self._asn_loaded:
            self._asn = await self.repo.asns.profile_by_account(self.account.id)
            self._asn_loaded = True
        return self._asn

    async def asn_and_open_count(self) -> tuple[AsnProfile | None, int]:
        """The registered ASN (as `asn()`, which it loads too) and how many open
        sponsorships it has (0 without an ASN): one statement."""
        found = await self.repo.asns.profile_and_open_count(self.account.id)
        self._asn, open_count = found if found is not None else (None, 0)
        self._asn_loaded = True
        return self._asn, open_count

    def forget_asn(self) -> None:
        self._asn_loaded = False

    async def pic(self) -> PicRole | None:
        """The PIC appointment of this account, if any (loaded once per event).

        The OPD a PIC acts on always comes from here, never from the person's input.
        """
        if not self._pic_loaded:
            # Pending ORM writes (a registration in this event) must be visible to it.
            if self.repo.has_session:
                await self.repo.session.flush()
            self._pic = await pic_for_account(self.repo.connection, self.account.id, now=self.now)
            self._pic_loaded = True
            if self._pic is not None and self.event.display_name:
                # Appointed by id before ever writing: the name people are told to contact.
                await remember_display_name(
                    self.repo.connection, self.account.id, self.event.display_name
                )
        return self._pic

    @property
    def pic_loaded(self) -> bool:
        """Whether `pic()` was read in this event (it answers from memory then)."""
        return self._pic_loaded

    def forget_pic(self) -> None:
        self._pic_loaded = False

    def option(self, key: str, label: str) -> Option:
        """An answer option of the current question, tagged so stale buttons are recognised.

        Options valid at any time (menus) are actions: `handlers.actions`."""
        return Option(id=f"{self.state.version}:{key}", label=label)
