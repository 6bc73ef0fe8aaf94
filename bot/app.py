"""The composition root: settings -> logging -> database -> engine -> channels -> scheduler.

Everything is built here, in this order, and passed down; nothing is built by
an import side effect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import log_context
from bot.settings import Environment, LogFormat, Settings
from domain.dues import allowed_plans
from domain.eligibility import AgeBounds
from domain.payment_channels import (
    PaymentChannel,
    PaymentChannelsFileError,
    load_payment_channels,
)
from domain.tariff import DEFAULT_TARIFF, TariffFileError, TariffTable, load_tariff
from domain.vocabulary import Channel
from domain.workdays import HolidayFileError, WorkCalendar, load_holidays
from handlers.context import EngineConfig
from handlers.engine import Engine
from handlers.i18n import Catalogs
from scheduler.digest import DigestPlanner
from scheduler.dispatcher import Dispatcher, budget_rates
from scheduler.planning import OffLoop, Planning
from scheduler.reminders import ReminderPlanner
from scheduler.runner import build_scheduler, housekeeping_run
from scheduler.sending import Sender
from sertakan_data import (
    COLLECTIVE_COLUMNS,
    COVERAGE_TARGETS,
    HOLIDAYS,
    OPD_SEED,
    PAYMENT_CHANNELS,
    TARIFF,
)
from storage import key_check, planner_runs
from storage.collective_columns import (
    DEFAULT_COLUMN_MAP,
    ColumnMap,
    ColumnMapError,
    load_column_map,
)
from storage.coverage import CoverageTargets, TargetsFileError, load_targets
from storage.coverage_cache import CoverageCache
from storage.crypto import KeyRing, NikCipher, NikKeyError, create_key_file, read_key_ring
from storage.db import (
    DatabaseUnreachable,
    Sleep,
    create_engine,
    create_sessionmaker,
    is_sqlite,
    probe,
    retry_while_unreachable,
)
from storage.migrate import upgrade_in_child
from storage.opd_repository import OpdRepository
from storage.send_budget import SendBudget, send_budget

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class StartupError(RuntimeError):
    """The configuration cannot work; the message says what to set."""


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Loggers held at WARNING whatever SERTAKAN_LOG_LEVEL says: APScheduler writes two
#: INFO lines per job run (the dispatcher runs every 2 s); aiogram's events and
#: aiosqlite's DEBUG lines carry update contents and query results (personal data).
QUIET_LOGGERS = ("apscheduler", "aiogram.event", "aiosqlite")


def log_file(settings: Settings) -> Path:
    """Where the console's log records go: the chat owns the terminal."""
    return settings.app.data_dir / "sertakan.log"


def configure_logging(settings: Settings, *, to_file: Path | None = None) -> None:
    """Log at SERTAKAN_LOG_LEVEL to stderr, or, with `to_file`, appended to that file (0600).

    SERTAKAN_LOG_FORMAT=json writes one JSON object per line (`bot.log_context`).

    The console passes `log_file(settings)`: log lines printed between the
    bot's replies would bury the conversation. The file is owner-only whatever
    the umask, like every file this process writes. As `logging.basicConfig`,
    it leaves a root logger that already has handlers alone (a test runner's).
    """
    handler: logging.Handler
    if to_file is None:
        handler = logging.StreamHandler()
    else:
        to_file.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(to_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        to_file.chmod(0o600)
        # Opened at the first record: unused when the root logger is configured already.
        handler = logging.FileHandler(to_file, encoding="utf-8", delay=True)
    # Request and update ids on every record, secrets masked; JSON lines with SERTAKAN_LOG_FORMAT.
    log_context.prepare(handler, json=settings.app.log_format is LogFormat.JSON)
    logging.basicConfig(level=settings.app.log_level.upper(), handlers=[handler])
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configured_nik_key(settings: Settings) -> KeyRing | None:
    """SERTAKAN_NIK_KEY decoded (one key: key 1, or a key ring); None when a key file serves."""
    configured = settings.app.nik_key
    if configured is not None:
        try:
            return KeyRing.parse(configured.get_secret_value())
        except NikKeyError as exc:
            raise StartupError(str(exc)) from exc
    if settings.app.env is Environment.PRODUCTION and settings.app.nik_key_file is None:
        raise StartupError(
            "SERTAKAN_NIK_KEY is required in production (or SERTAKAN_NIK_KEY_FILE naming a "
            "key ring file): NIKs are encrypted with it. Generate one with "
            "`sertakan key generate` and keep it safe; losing it makes stored NIKs unreadable."
        )
    return None


def key_file(settings: Settings) -> Path:
    """The key ring file used when SERTAKAN_NIK_KEY is not set (development: data/nik.key)."""
    return settings.app.nik_key_file or settings.app.data_dir / "nik.key"


async def nik_key_ring(settings: Settings, db: AsyncEngine) -> KeyRing:
    """The NIK key ring: SERTAKAN_NIK_KEY, or the key file (SERTAKAN_NIK_KEY_FILE, data/nik.key).

    A missing key file is created only in development and only when the
    database holds nothing encrypted; otherwise the old key is needed and
    start-up stops (StartupError) without writing anything.
    """
    configured = configured_nik_key(settings)
    if configured is not None:
        return configured
    path = key_file(settings)
    try:
        existing = read_key_ring(path)
    except NikKeyError as exc:
        raise StartupError(f"the NIK key file {path}: {exc}") from exc
    if existing is not None:
        return existing
    if settings.app.env is Environment.PRODUCTION:
        raise StartupError(f"the NIK key file {path} (SERTAKAN_NIK_KEY_FILE) does not exist")
    async with db.connect() as connection:
        keyed = await key_check.keyed_data_present(connection)
    if keyed:
        raise StartupError(
            f"the NIK key file {path} is missing, but the database holds data encrypted "
            "with a key. Nothing was changed and no new key was made: restore the key file "
            "from your backup (or set SERTAKAN_NIK_KEY to that key) and start again. "
            "A new key could not read the stored NIKs and would let the same NIK be "
            "enrolled twice."
        )
    key = create_key_file(path)
    log.warning(
        "created a new NIK key file %s for this new database: back it up now; "
        "without it the NIKs stored from now on cannot be read",
        path,
    )
    return KeyRing.single(key)


def _key_source(settings: Settings) -> str:
    return "SERTAKAN_NIK_KEY" if settings.app.nik_key is not None else str(key_file(settings))


def _key_refused(settings: Settings, mismatch: key_check.KeyMismatch) -> StartupError:
    return StartupError(
        f"the NIK key does not match this database: {mismatch}. Nothing was changed. "
        f"Restore the key this database was encrypted with ({_key_source(settings)}) from "
        "your backup and start again; another key cannot read the stored NIKs and would "
        "let the same NIK be enrolled twice."
    )


async def checked_cipher(settings: Settings, db: AsyncEngine) -> tuple[NikCipher, bool]:
    """The NIK cipher, verified against `db` (read-only); True when its key is yet to be recorded.

    Raises StartupError when the key is not the database's own.
    """
    ring = await nik_key_ring(settings, db)
    # A ring file is read again when `sertakan key rotate` (or retire) changes it.
    source = None if settings.app.nik_key is not None else key_file(settings)
    cipher = NikCipher(ring, source=source)
    async with db.connect() as connection:
        try:
            verdict = await key_check.verify(connection, cipher)
        except key_check.KeyMismatch as mismatch:
            raise _key_refused(settings, mismatch) from None
    return cipher, verdict is not key_check.Verdict.KNOWN


async def record_key(settings: Settings, db: AsyncEngine, cipher: NikCipher, now: datetime) -> None:
    """Store the key's id and check value in a database that has none (after migrating)."""
    async with db.begin() as connection:
        if not await key_check.has_table(connection):
            log.warning(
                "the database schema is not up to date: the NIK key id is not recorded "
                "(run `sertakan migrate`)"
            )
            return
        try:
            verdict = await key_check.confirm(connection, cipher, now=now)
        except key_check.KeyMismatch as mismatch:
            raise _key_refused(settings, mismatch) from None
    if verdict is not key_check.Verdict.KNOWN:
        log.info("recorded NIK key id %s in the database", cipher.key_id)


def engine_config(settings: Settings) -> EngineConfig:
    program = settings.program
    if program.min_age > program.max_age:
        raise StartupError("PROGRAM_MIN_AGE must not be above PROGRAM_MAX_AGE")
    try:
        timezone = ZoneInfo(settings.app.timezone)
    except (KeyError, ValueError) as exc:
        raise StartupError(f"SERTAKAN_TIMEZONE {settings.app.timezone!r} is unknown") from exc
    return EngineConfig(
        age_bounds=AgeBounds(minimum=program.min_age, maximum=program.max_age),
        max_workers_per_asn=program.max_workers_per_asn,
        draft_idle=timedelta(minutes=program.draft_idle_minutes),
        timezone=timezone,
        default_language=settings.app.default_language,
        tariff=tariff_table(settings),
        collective_columns=collective_columns(settings),
        max_months_ahead=program.max_months_ahead,
        plans=allowed_plans(semiannual=program.allow_semiannual, annual=program.allow_annual),
        payment_channels=payment_channels(settings),
        accept_without_consent=program.accept_without_consent,
        consent_link_ttl=timedelta(days=program.consent_link_days),
        telegram_bot_username=settings.telegram.bot_username.strip().lstrip("@"),
        web_base_url=settings.web.public_url,
    )


@dataclasses.dataclass(slots=True)
class Runtime:
    """Everything a channel needs, built once."""

    settings: Settings
    db: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    engine: Engine
    catalogs: Catalogs
    cipher: NikCipher
    clock: Clock
    calendar: WorkCalendar
    #: The Telegram and WhatsApp send budgets the dispatcher and the replies share (through
    #: PostgreSQL with the other processes; this process's own on SQLite).
    send_budget: SendBudget

    @property
    def timezone(self) -> ZoneInfo:
        """SERTAKAN_TIMEZONE: the zone of the dates and times people read."""
        return self.engine.config.timezone

    async def close(self) -> None:
        await self.send_budget.close()
        await self.db.dispose()


async def build_runtime(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    migrate: bool | None = None,
    sleep: Sleep = asyncio.sleep,
) -> Runtime:
    """Open the database, check the NIK key against it, migrate when configured, build the engine.

    A key that is not the database's own stops start-up (StartupError) before
    anything is written, migrations included. A database that refuses
    connections or is locked is tried again (`open_database`); `sleep` waits
    between the tries.
    """
    configured_nik_key(settings)  # a missing or malformed key fails before the database opens
    config = engine_config(settings)
    url = settings.database_url
    await open_database(settings, migrate=False, sleep=sleep)
    db = create_engine(
        url, busy_timeout_ms=settings.database.sqlite_busy_timeout_ms, echo=settings.database.echo
    )
    try:
        cipher, unrecorded = await checked_cipher(settings, db)
        if settings.database.auto_migrate if migrate is None else migrate:
            # Alembic uses its own connection: ours must not hold a schema from before.
            await db.dispose()
            await open_database(settings, migrate=True, sleep=sleep)
        if unrecorded:
            await record_key(settings, db, cipher, clock())
    except BaseException:
        await db.dispose()
        raise
    sessionmaker = create_sessionmaker(db)
    catalogs = Catalogs()
    calendar = work_calendar(settings, clock)
    engine = Engine(
        database=db,
        cipher=cipher,
        config=dataclasses.replace(config, calendar=calendar),
        catalogs=catalogs,
        clock=clock,
        # Workers have WhatsApp only (PRODUCT 2): without it they are not asked or told.
        worker_channel=Channel.WHATSAPP if settings.whatsapp.enabled else None,
        # The rows it queues are held as long as the deliverer holds the ones it claims.
        reply_lease=timedelta(seconds=settings.reply.lease_s),
    )
    return Runtime(
        settings=settings,
        db=db,
        sessionmaker=sessionmaker,
        engine=engine,
        catalogs=catalogs,
        cipher=cipher,
        clock=clock,
        calendar=calendar,
        send_budget=send_budget(db, budget_rates(settings.dispatch)),
    )


async def open_database(settings: Settings, *, migrate: bool, sleep: Sleep = asyncio.sleep) -> None:
    """Reach the database (and migrate it to head when `migrate`), waiting while it is away.

    A database still starting (a container next to ours), refusing
    connections or locked by another process is tried again with back-off
    for up to DATABASE_STARTUP_RETRY_S of waiting, with a log line per wait;
    then, or at once for any other error (a wrong password), a StartupError.
    """
    url = settings.database_url

    async def reach() -> None:
        await probe(url, busy_timeout_ms=settings.database.sqlite_busy_timeout_ms)
        if migrate:
            await upgrade_in_child(url)

    try:
        await retry_while_unreachable(
            reach, url=url, budget_s=settings.database.startup_retry_s, sleep=sleep
        )
    except DatabaseUnreachable as exc:
        raise StartupError(str(exc)) from exc


def collective_columns(settings: Settings) -> ColumnMap:
    """The collective file's column map (PROGRAM_COLLECTIVE_COLUMNS_FILE); refused with its line.

    Without the file, the built-in default (the shipped file's columns), with a warning.
    """
    path = settings.data_file(COLLECTIVE_COLUMNS, settings.program.collective_columns_file)
    if not path.is_file():
        log.warning("no column map at %s: using the built-in collective file columns", path)
        return DEFAULT_COLUMN_MAP
    try:
        return load_column_map(path)
    except (ColumnMapError, OSError) as exc:
        raise StartupError(f"PROGRAM_COLLECTIVE_COLUMNS_FILE {path}: {exc}") from exc


def coverage_targets(settings: Settings) -> CoverageTargets:
    """The coverage targets (PROGRAM_COVERAGE_TARGETS_FILE); refused with its line.

    Without the file, no targets (the coverage page shows none), with a warning.
    """
    path = settings.data_file(COVERAGE_TARGETS, settings.program.coverage_targets_file)
    if not path.is_file():
        log.warning("no coverage targets at %s: the coverage page shows no targets", path)
        return CoverageTargets()
    try:
        return load_targets(path)
    except TargetsFileError as exc:
        raise StartupError(f"PROGRAM_COVERAGE_TARGETS_FILE: {exc}") from exc


def coverage_cache(runtime: Runtime) -> CoverageCache:
    """The coverage page's figures for this process (targets file, PROGRAM_COVERAGE_MAX_AGE_S)."""
    return CoverageCache(
        runtime.db,
        targets=coverage_targets(runtime.settings),
        calendar=runtime.calendar,
        zone=runtime.timezone,
        clock=runtime.clock,
        max_age=timedelta(seconds=runtime.settings.program.coverage_max_age_s),
    )


def tariff_table(settings: Settings) -> TariffTable:
    """The tariff file (PROGRAM_TARIFF_FILE); the built-in default, with a warning, without one."""
    path = settings.data_file(TARIFF, settings.program.tariff_file)
    if not path.exists():
        log.warning("no tariff file at %s: using the built-in PP 44/2015 tariff", path)
        return DEFAULT_TARIFF
    try:
        return load_tariff(path)
    except TariffFileError as exc:
        raise StartupError(f"PROGRAM_TARIFF_FILE {path}: {exc}") from exc


def payment_channels(settings: Settings) -> tuple[PaymentChannel, ...]:
    """Where dues are paid (PROGRAM_PAYMENT_CHANNELS_FILE); none, with a warning, without
    the file (the texts then say to ask the PIC)."""
    path = settings.data_file(PAYMENT_CHANNELS, settings.program.payment_channels_file)
    if not path.exists():
        log.warning("no payment channels file at %s: sponsors are told to ask their PIC", path)
        return ()
    try:
        return load_payment_channels(path)
    except PaymentChannelsFileError as exc:
        raise StartupError(f"PROGRAM_PAYMENT_CHANNELS_FILE {path}: {exc}") from exc


def work_calendar(settings: Settings, clock: Clock) -> WorkCalendar:
    """The holiday list (PROGRAM_HOLIDAYS_FILE); weekends only, with a warning, without one."""
    path = settings.data_file(HOLIDAYS, settings.program.holidays_file)
    if not path.exists():
        log.warning("no holiday list at %s: only weekends are days off", path)
        return WorkCalendar(())
    try:
        calendar = load_holidays(path)
    except HolidayFileError as exc:
        raise StartupError(f"PROGRAM_HOLIDAYS_FILE {path}: {exc}") from exc
    year = clock().year
    if not calendar.covers(year):
        log.warning("the holiday list %s has no entries for %d: update it", path, year)
    return calendar


def build_planners(runtime: Runtime) -> tuple[ReminderPlanner, DigestPlanner]:
    """The daily planners (dues reminders, PIC digest) as the scheduler and `sertakan plan`
    run them."""
    settings = runtime.settings
    timezone = ZoneInfo(settings.app.timezone)
    reminders = ReminderPlanner(
        runtime.db,
        runtime.catalogs,
        runtime.clock,
        timezone=timezone,
        calendar=runtime.calendar,
        tariff=runtime.engine.config.tariff,
        worker_channel=runtime.engine.notices.worker_channel,
        payment_channels=runtime.engine.config.payment_channels,
        chunk_size=settings.planner.chunk_size,
        pages_in_flight=settings.planner.pages_in_flight,
    )
    digest = DigestPlanner(
        runtime.db,
        runtime.catalogs,
        runtime.clock,
        timezone=timezone,
        calendar=runtime.calendar,
        send_at=settings.program.digest_time,
        tariff=runtime.engine.config.tariff,
    )
    return reminders, digest


def off_loop(settings: Settings) -> OffLoop | None:
    """Where the reminder planner's child process finds the database; None when it cannot
    (PLANNER_OFF_LOOP off, or an in-memory SQLite database only this process sees)."""
    url = settings.database_url
    if not settings.planner.off_loop:
        return None
    if is_sqlite(url) and make_url(url).database in (None, "", ":memory:"):
        return None
    return OffLoop(url, settings.database.sqlite_busy_timeout_ms)


def build_planning(runtime: Runtime, *, owner: str | None = None) -> Planning:
    """The planning jobs (reminders, digest, housekeeping) with their leases, as the
    scheduler ticks them and `sertakan plan` runs them."""
    settings = runtime.settings
    reminders, digest = build_planners(runtime)

    async def housekeeping() -> int:
        return await housekeeping_run(
            runtime.sessionmaker,
            now=runtime.clock(),
            processed_update_retention=timedelta(days=settings.app.processed_update_retention_days),
            retention=timedelta(days=settings.app.retention_days),
        )

    return Planning(
        runtime.db,
        runtime.clock,
        timezone=runtime.timezone,
        calendar=runtime.calendar,
        owner=owner or planner_runs.owner_id(),
        lease_s=settings.planner.lease_s,
        reminders=reminders,
        reminder_time=settings.program.reminder_time,
        digest=digest,
        digest_time=settings.program.digest_time,
        housekeeping=housekeeping,
        off_loop=off_loop(settings),
    )


def build_background(
    runtime: Runtime, senders: dict[Channel, Sender], *, quiet_hours: bool = True
) -> tuple[AsyncIOScheduler, Dispatcher]:
    """The scheduler (not started) with housekeeping, the outbox dispatcher, the digest, the
    dues reminders, and the catch-up of the day's planning once it starts.

    `quiet_hours=False` (the console: one terminal, nobody's phone) sends at any hour.
    """
    settings = runtime.settings
    timezone = ZoneInfo(settings.app.timezone)
    dispatch = settings.dispatch
    if not quiet_hours:
        dispatch = dispatch.model_copy(update={"quiet_end": dispatch.quiet_start})
    dispatcher = Dispatcher(
        runtime.db, senders, runtime.clock, dispatch, timezone, budget=runtime.send_budget
    )
    scheduler = build_scheduler(
        sessionmaker=runtime.sessionmaker,
        clock=runtime.clock,
        processed_update_retention=timedelta(days=settings.app.processed_update_retention_days),
        timezone=settings.app.timezone,
        retention=timedelta(days=settings.app.retention_days),
        dispatcher=dispatcher,
        planning=build_planning(runtime),
        planning_tick_s=settings.planner.tick_s,
    )
    return scheduler, dispatcher


async def seed_opds_if_empty(runtime: Runtime) -> int:
    """Load the shipped OPD list when the database has none (first console run)."""
    settings = runtime.settings
    path = settings.data_file(OPD_SEED, settings.app.opd_seed_file)
    async with runtime.sessionmaker() as session, session.begin():
        repo = OpdRepository(session)
        if await repo.count() > 0 or not path.exists():
            return 0
        result = await repo.load_csv(path, now=runtime.clock())
    log.info("loaded %d OPDs from %s", result.inserted, path)
    return result.inserted
