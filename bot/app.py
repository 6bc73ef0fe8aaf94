"""The composition root: settings -> logging -> database -> engine -> channels -> scheduler.

Everything is built here, in this order, and passed down; nothing is built by
an import side effect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.settings import Environment, Settings
from domain.dues import allowed_plans
from domain.eligibility import AgeBounds
from domain.tariff import DEFAULT_TARIFF, TariffFileError, TariffTable, load_tariff
from domain.vocabulary import Channel
from domain.workdays import HolidayFileError, WorkCalendar, load_holidays
from handlers.context import EngineConfig
from handlers.engine import Engine
from handlers.i18n import Catalogs
from scheduler.digest import DigestPlanner
from scheduler.dispatcher import Dispatcher
from scheduler.reminders import ReminderPlanner
from scheduler.runner import build_scheduler
from scheduler.sending import Sender
from storage.crypto import NikCipher, NikKeyError, decode_key, load_or_create_key_file
from storage.db import (
    DatabaseUnreachable,
    Sleep,
    create_engine,
    create_sessionmaker,
    probe,
    retry_while_unreachable,
)
from storage.migrate import upgrade_to_head
from storage.opd_repository import OpdRepository

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class StartupError(RuntimeError):
    """The configuration cannot work; the message says what to set."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.app.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiogram logs update contents at DEBUG; keep personal data out of logs.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)


def nik_master_key(settings: Settings) -> bytes:
    """The NIK key from settings; in development a key file is created if none is set."""
    configured = settings.app.nik_key
    if configured is not None:
        try:
            return decode_key(configured.get_secret_value())
        except NikKeyError as exc:
            raise StartupError(str(exc)) from exc
    if settings.app.env is Environment.PRODUCTION:
        raise StartupError(
            "SERTAKAN_NIK_KEY is required in production: NIKs are encrypted with it. "
            "Generate one with `sertakan key generate` and keep it safe; "
            "losing it makes stored NIKs unreadable."
        )
    return load_or_create_key_file(settings.app.data_dir / "nik.key")


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
        max_months_ahead=program.max_months_ahead,
        plans=allowed_plans(semiannual=program.allow_semiannual, annual=program.allow_annual),
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

    async def close(self) -> None:
        await self.db.dispose()


async def build_runtime(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    migrate: bool | None = None,
    sleep: Sleep = asyncio.sleep,
) -> Runtime:
    """Open the database (migrating it when configured) and build the engine.

    A database that refuses connections or is locked is tried again
    (`open_database`); `sleep` waits between the tries.
    """
    cipher = NikCipher(nik_master_key(settings))
    config = engine_config(settings)
    url = settings.database_url
    auto_migrate = settings.database.auto_migrate if migrate is None else migrate
    await open_database(settings, migrate=auto_migrate, sleep=sleep)
    db = create_engine(
        url, busy_timeout_ms=settings.database.sqlite_busy_timeout_ms, echo=settings.database.echo
    )
    sessionmaker = create_sessionmaker(db)
    catalogs = Catalogs()
    calendar = work_calendar(settings, clock)
    engine = Engine(
        database=db,
        cipher=cipher,
        config=dataclasses.replace(config, calendar=calendar),
        catalogs=catalogs,
        clock=clock,
        # Workers have WhatsApp only (SPEC 2): without it they are not asked or told.
        worker_channel=Channel.WHATSAPP if settings.whatsapp.enabled else None,
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
            await upgrade_to_head(url)

    try:
        await retry_while_unreachable(
            reach, url=url, budget_s=settings.database.startup_retry_s, sleep=sleep
        )
    except DatabaseUnreachable as exc:
        raise StartupError(str(exc)) from exc


def tariff_table(settings: Settings) -> TariffTable:
    """The tariff file (PROGRAM_TARIFF_FILE); the built-in default, with a warning, without one."""
    path = settings.program.tariff_file
    if not path.exists():
        log.warning("no tariff file at %s: using the built-in PP 44/2015 tariff", path)
        return DEFAULT_TARIFF
    try:
        return load_tariff(path)
    except TariffFileError as exc:
        raise StartupError(f"PROGRAM_TARIFF_FILE {path}: {exc}") from exc


def work_calendar(settings: Settings, clock: Clock) -> WorkCalendar:
    """The holiday list (PROGRAM_HOLIDAYS_FILE); weekends only, with a warning, without one."""
    path = settings.program.holidays_file
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


def build_background(
    runtime: Runtime, senders: dict[Channel, Sender], *, quiet_hours: bool = True
) -> tuple[AsyncIOScheduler, Dispatcher]:
    """The scheduler (not started) with housekeeping, the outbox dispatcher and the digest.

    `quiet_hours=False` (the console: one terminal, nobody's phone) sends at any hour.
    """
    settings = runtime.settings
    timezone = ZoneInfo(settings.app.timezone)
    dispatch = settings.dispatch
    if not quiet_hours:
        dispatch = dispatch.model_copy(update={"quiet_end": dispatch.quiet_start})
    dispatcher = Dispatcher(runtime.db, senders, runtime.clock, dispatch, timezone)
    digest = DigestPlanner(
        runtime.db,
        runtime.catalogs,
        runtime.clock,
        timezone=timezone,
        calendar=runtime.calendar,
        send_at=settings.program.digest_time,
        tariff=runtime.engine.config.tariff,
    )
    scheduler = build_scheduler(
        sessionmaker=runtime.sessionmaker,
        clock=runtime.clock,
        processed_update_retention=timedelta(days=settings.app.processed_update_retention_days),
        timezone=settings.app.timezone,
        dispatcher=dispatcher,
        digest=digest,
        digest_time=settings.program.digest_time,
        reminders=ReminderPlanner(
            runtime.db,
            runtime.catalogs,
            runtime.clock,
            timezone=timezone,
            calendar=runtime.calendar,
            tariff=runtime.engine.config.tariff,
            worker_channel=runtime.engine.notices.worker_channel,
        ),
        reminder_time=settings.program.reminder_time,
    )
    return scheduler, dispatcher


async def seed_opds_if_empty(runtime: Runtime) -> int:
    """Load the shipped OPD list when the database has none (first console run)."""
    path = runtime.settings.app.opd_seed_file
    async with runtime.sessionmaker() as session, session.begin():
        repo = OpdRepository(session)
        if await repo.count() > 0 or not path.exists():
            return 0
        result = await repo.load_csv(path, now=runtime.clock())
    log.info("loaded %d OPDs from %s", result.inserted, path)
    return result.inserted
