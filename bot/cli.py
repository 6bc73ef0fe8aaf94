"""`sertakan` command line: run the bot, the console, migrations, OPD data, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import importlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.app import (
    Runtime,
    StartupError,
    build_background,
    build_runtime,
    configure_logging,
    log_file,
    open_database,
    seed_opds_if_empty,
)
from bot.console import ConsoleChannel
from bot.settings import Environment, Settings, TelegramMode
from domain.local_time import format_local
from domain.vocabulary import Channel
from scheduler.runner import stop_scheduler
from storage.backup import BackupError, backup
from storage.crypto import generate_key
from storage.dead_letters import DeadLetters
from storage.opd_repository import OpdFileError, OpdRepository

if TYPE_CHECKING:
    from aiohttp.web import AppRunner

    from bot.telegram import TelegramChannel
    from bot.whatsapp.channel import WhatsAppChannel
    from scheduler.sending import Sender

log = logging.getLogger(__name__)


class _Extension(Protocol):
    """A module adding subcommands (bot/cli_*.py)."""

    def add_parsers(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...

    async def dispatch(self, args: argparse.Namespace, runtime: Runtime) -> int | None:
        """The exit code, or None when the command is not this module's."""
        ...


#: The modules adding subcommands, imported only for a command that needs them (or the
#: full help): `sertakan run` never loads them (about 0.9 MB of a running bot's memory).
_EXTENSION_MODULES = (
    "bot.cli_admin",
    "bot.cli_files",
    "bot.cli_outbox",
    "bot.cli_plan",
    "bot.cli_web",
)
_BUILT_IN = frozenset({"run", "console", "migrate", "opd", "failed", "key", "backup"})


def _extensions() -> tuple[_Extension, ...]:
    return tuple(importlib.import_module(name) for name in _EXTENSION_MODULES)


def _needs_extensions(argv: Sequence[str]) -> bool:
    """Whether parsing `argv` needs the extensions' subcommands: a command that is not
    built in, or the top-level help that lists every command."""
    for word in argv:
        if word in ("-h", "--help"):
            return True
        if not word.startswith("-"):
            return word not in _BUILT_IN
    return False


def build_parser(*, extensions: bool = True, keys: bool = True) -> argparse.ArgumentParser:
    """The command line; without `extensions` (or `keys`) only the built-in commands (and
    `key generate`), for a command that is one of them."""
    parser = argparse.ArgumentParser(
        prog="sertakan",
        description="SERTAKAN bot: ASN enroll and sponsor vulnerable workers into BPJS "
        "Ketenagakerjaan. Without a subcommand, `run` is assumed.",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser(
        "run",
        help="run the bot: Telegram when TELEGRAM_TOKEN is set, otherwise the console",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="serve the webhooks from N processes on one port (webhook mode, PostgreSQL; "
        "default: WEB_WORKERS, 1)",
    )
    # Set by the supervisor of `--workers N` on its children: share the port.
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    console = sub.add_parser("console", help="chat with the bot in this terminal")
    console.add_argument("--user", default="asn", help="simulated user id (default: asn)")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    opd = sub.add_parser("opd", help="manage the OPD (agency) list")
    opd_sub = opd.add_subparsers(dest="opd_command", required=True)
    load = opd_sub.add_parser("load", help="load or update OPDs from a CSV file (code,name)")
    load.add_argument("file", type=Path)
    failed = sub.add_parser("failed", help="inbound updates parked after repeated failures")
    failed_sub = failed.add_subparsers(dest="failed_command", required=True)
    failed_sub.add_parser("list", help="list parked updates (newest first, no content)")
    key = sub.add_parser("key", help="NIK encryption key")
    key_sub = key.add_subparsers(dest="key_command", required=True)
    key_sub.add_parser("generate", help="print a new random SERTAKAN_NIK_KEY")
    if keys:
        from bot import cli_keys

        cli_keys.add_parsers(key_sub)
    backup = sub.add_parser(
        "backup",
        help="back the database up into a new file while the bot runs (SQLite: online "
        "backup; PostgreSQL: pg_dump --format=custom); the NIK key is not in it",
    )
    backup.add_argument("file", type=Path)
    for extension in _extensions() if extensions else ():
        extension.add_parsers(sub)
    return parser


async def run_extension(args: argparse.Namespace, runtime: Runtime) -> int:
    """Run a subcommand of one of the `_EXTENSION_MODULES` on `runtime`."""
    for extension in _extensions():
        result = await extension.dispatch(args, runtime)
        if result is not None:
            return result
    raise AssertionError(f"no handler for command {args.command!r}")


#: Files this process creates (SQLite database, WAL, exports, key file) are owner-only.
PRIVATE_UMASK = 0o077


def main(argv: Sequence[str] | None = None) -> int:
    # First, before anything writes a file: they hold NIKs, names and phone numbers.
    os.umask(PRIVATE_UMASK)
    words = sys.argv[1:] if argv is None else list(argv)
    full = _needs_extensions(words)
    args = build_parser(extensions=full, keys=full or "key" in words).parse_args(words)
    if args.command == "key" and args.key_command == "generate":
        print(generate_key())
        return 0
    settings = Settings()
    configure_logging(settings, to_file=log_file(settings) if _is_console(args, settings) else None)
    try:
        return asyncio.run(_dispatch(args, settings))
    except StartupError as exc:
        print(f"sertakan: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _no_messenger(settings: Settings) -> bool:
    return settings.telegram.token is None and not settings.whatsapp.enabled


def _is_console(args: argparse.Namespace, settings: Settings) -> bool:
    """`sertakan console`, or `run` (the default) without Telegram or WhatsApp credentials
    outside production (in production `run` refuses instead: `_dispatch`)."""
    command = args.command or "run"
    trying = command == "run" and _no_messenger(settings)
    return command == "console" or (trying and settings.app.env is not Environment.PRODUCTION)


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command or "run"
    if command not in _BUILT_IN:
        runtime = await build_runtime(settings)
        try:
            return await run_extension(args, runtime)
        finally:
            await runtime.close()
    if command == "migrate":
        await open_database(settings, migrate=True)
        print("database is at the latest schema")
        return 0
    if command == "opd":
        return await _load_opds(settings, args.file)
    if command == "failed":
        return await _list_failed(settings)
    if command == "key":
        from bot import cli_keys

        return await cli_keys.dispatch(args, settings)
    if command == "backup":
        return await _backup(settings, args.file)
    if _is_console(args, settings):
        return await _run_console(settings, user=getattr(args, "user", "asn"))
    if _no_messenger(settings):
        # A production server with its credentials missing (a service unit or a container
        # whose env file was not filled in) must stop with a reason, not open a console
        # that reads end-of-file, exits 0, is restarted, and prints a fresh
        # administrator sign-in link into the service's log each time.
        raise StartupError(
            "no messenger is configured: set TELEGRAM_TOKEN, or WHATSAPP_PHONE_NUMBER_ID "
            "with the other WHATSAPP_* settings (docs/DEPLOY.md); to try the bot without "
            "them, run `sertakan console` or leave SERTAKAN_ENV unset"
        )
    workers = getattr(args, "workers", None) or settings.web.workers
    if workers > 1 and not getattr(args, "worker", False):
        from bot.workers import supervise

        return await supervise(settings, workers)
    child = getattr(args, "worker", False)
    return await _run_channels(settings, reuse_port=child, announce=not child)


async def _load_opds(settings: Settings, path: Path) -> int:
    runtime = await build_runtime(settings)
    try:
        async with runtime.sessionmaker() as session, session.begin():
            result = await OpdRepository(session).load_csv(path, now=runtime.clock())
    except (OpdFileError, OSError) as exc:
        print(f"sertakan: {exc}", file=sys.stderr)
        return 1
    finally:
        await runtime.close()
    print(
        f"OPD list loaded: {result.inserted} new, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )
    return 0


async def _backup(settings: Settings, destination: Path) -> int:
    try:
        await asyncio.to_thread(backup, settings.database_url, destination)
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"sertakan: {exc}", file=sys.stderr)
        return 1
    print(
        f"database backed up to {destination}; the NIK key is not in it: "
        "keep the key's own backup apart"
    )
    return 0


async def _list_failed(settings: Settings) -> int:
    runtime = await build_runtime(settings)
    try:
        parked = await DeadLetters(runtime.sessionmaker, runtime.cipher).list()
    finally:
        await runtime.close()
    if not parked:
        print("no parked updates")
        return 0
    print("id\tchannel\tupdate\tsender\terror\tattempts\tfailed at")
    for row in parked:
        print(
            f"{row.id}\t{row.channel.value}\t{row.update_id}\t{row.sender_id or '-'}\t"
            f"{row.error_type}\t{row.attempts}\t"
            f"{format_local(row.failed_at, runtime.timezone, seconds=True)}"
        )
    return 0


async def _run_console(settings: Settings, *, user: str) -> int:
    runtime = await build_runtime(settings)
    try:
        await seed_opds_if_empty(runtime)
        console = ConsoleChannel(
            runtime.engine,
            runtime.clock,
            runtime.catalogs,
            user=user,
            files_dir=settings.app.data_dir / "console_files",
        )
        # Notices (card ready, returned, digests) print in this terminal at any hour.
        scheduler, dispatcher = build_background(
            runtime, {Channel.CONSOLE: console.sender}, quiet_hours=False
        )
        scheduler.start()
        # The operator's hint, not a log record: the records themselves go to the file.
        print(f"sertakan: the log is written to {log_file(settings)}", file=sys.stderr)
        runner = await _console_web(runtime)
        try:
            await console.run()
        finally:
            await dispatcher.stop()
            await stop_scheduler(scheduler)
            await runner.cleanup()
    finally:
        await runtime.close()
    return 0


async def _console_web(runtime: Runtime) -> AppRunner:
    """The web workbench beside the console chat: its address and an administrator's
    one-time sign-in link are printed for the operator."""
    from aiohttp import web

    from bot.access_log import app_runner
    from bot.web.app import add_web_routes, web_parts
    from handlers.web_link import SIGN_IN_PATH
    from storage.audit import Actor
    from storage.web_access import Principal, WebRole, issue_link

    settings = runtime.settings.web
    app = web.Application()
    add_web_routes(app, web_parts(runtime))
    runner = app_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as error:
        # The chat works without the pages (another process holds the port).
        print(f"sertakan: web pages not started on {settings.public_url}: {error}", file=sys.stderr)
        return runner
    from bot import cli_web  # the console's administrator link only

    login = cli_web.login()
    async with runtime.db.begin() as connection:
        token = await issue_link(
            connection,
            Principal(WebRole.ADMIN, admin_login=login),
            actor=Actor.admin(login),
            now=runtime.clock(),
        )
    print(f"sertakan: web pages at {settings.public_url}/web/", file=sys.stderr)
    print(
        f"sertakan: administrator sign-in (once, 10 minutes): "
        f"{settings.public_url}{SIGN_IN_PATH}?t={token}",
        file=sys.stderr,
    )
    return runner


async def _run_channels(
    settings: Settings, *, reuse_port: bool = False, announce: bool = True
) -> int:
    """Telegram (polling or webhook) and/or WhatsApp (webhook), with the outbox dispatcher.

    One web server serves every webhook (`WEB_HOST`:`WEB_PORT`): Telegram's in
    webhook mode, WhatsApp's always, with /healthz, /readyz and /metrics
    (`bot.health`). `reuse_port`: one of `sertakan run --workers N`'s
    processes, binding the port with SO_REUSEPORT. `announce`: publish the
    command menu and register the webhook with Telegram (False in those
    processes: their supervisor did it once, `bot.workers.announce_telegram`,
    rather than N times at every start and restart). The process runs until
    SIGINT/SIGTERM or until a channel's loop fails.
    """
    # Imported here: the console never loads aiogram, pywa or aiohttp's server.
    from aiohttp import web
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED

    from bot import metrics
    from bot.access_log import app_runner
    from bot.health import add_health_routes
    from bot.telegram import TelegramSender
    from bot.web.app import ReceiptSource, add_web_routes, web_parts
    from bot.web.receipts import ChannelReceipts, TelegramReceipts

    runtime = await build_runtime(settings)
    senders: dict[Channel, Sender] = {}
    telegram: TelegramChannel | None = None
    whatsapp: WhatsAppChannel | None = None
    try:
        if settings.telegram.token is not None:
            telegram = telegram_channel(runtime)
            senders[Channel.TELEGRAM] = TelegramSender(telegram.bot)
        if settings.whatsapp.enabled:
            # Imported only here: a Telegram-only process does not carry pywa (~11 MB).
            from bot.whatsapp.channel import build_whatsapp

            whatsapp = build_whatsapp(runtime)
            senders[Channel.WHATSAPP] = whatsapp.sender
    except BaseException:
        await _close_channels(runtime, telegram, whatsapp)
        raise
    scheduler, dispatcher = build_background(runtime, metrics.metered(senders))
    scheduler.add_listener(metrics.observe_job, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runner: web.AppRunner | None = None
    telegram_webhook = telegram is not None and settings.telegram.mode is TelegramMode.WEBHOOK
    loops: list[asyncio.Task[None]] = []
    # Start-up objects (mappers, models, catalogues) live as long as the process:
    # take them out of the collector's generations so full collections stay short.
    gc.collect()
    gc.freeze()
    _return_freed_memory()
    try:
        if telegram is not None:
            if announce:
                await telegram.set_commands()
            if not runtime.engine.config.telegram_bot_username:
                # Consent links t.me/<username>?start=... need it (TELEGRAM_BOT_USERNAME unset).
                runtime.engine.use_telegram_username(await telegram.username())
        scheduler.start()
        # One web server: the webhooks, health and metrics (bot/health) and the web
        # workbench (bot/web, issue 13).
        app = web.Application()
        if telegram is not None and telegram_webhook:
            telegram.webhook_routes(app)
        if whatsapp is not None:
            whatsapp.routes(app)
        add_health_routes(app, runtime)
        receipts: dict[str, ReceiptSource] = {}
        if telegram is not None:
            receipts[Channel.TELEGRAM.value] = TelegramReceipts(telegram.bot)
        if whatsapp is not None:
            from bot.whatsapp.receipts import WhatsAppReceipts

            receipts[Channel.WHATSAPP.value] = WhatsAppReceipts(whatsapp.client)
        add_web_routes(app, web_parts(runtime, ChannelReceipts(receipts)))
        runner = app_runner(app)
        await runner.setup()
        site = web.TCPSite(runner, settings.web.host, settings.web.port, reuse_port=reuse_port)
        await site.start()
        log.info("web server on %s:%s", settings.web.host, settings.web.port)
        if telegram is not None and telegram_webhook and announce:
            await telegram.set_webhook()
        if telegram is not None and telegram_webhook:
            # Replies refused for a while, or left by an earlier run (polling runs its own).
            loops.append(asyncio.create_task(telegram.replies.run(stop)))
        if whatsapp is not None:
            loops.append(asyncio.create_task(whatsapp.run(stop)))
            log.info("WhatsApp webhook at %s", settings.whatsapp.webhook_path)
        if telegram is not None and not telegram_webhook:
            loops.append(asyncio.create_task(telegram.run_polling(stop)))
            log.info("Telegram long polling started")
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(*loops, return_exceptions=True)
        stopped.cancel()
        for task in done:
            failure = None if task is stopped else task.exception()
            if failure is not None:
                raise failure
    finally:
        # A tick in progress records what it sent and hands back the rest; a planner's
        # run in progress commits (stop_scheduler waits for it).
        await dispatcher.stop()
        await stop_scheduler(scheduler)
        if runner is not None:
            await runner.cleanup()
        await _close_channels(runtime, telegram, whatsapp)
    return 0


def _return_freed_memory() -> None:
    """Give the heap pages start-up used and freed (catalogues read, seed files parsed,
    the collector's garbage) back to the system: glibc keeps them otherwise, and they
    count in the idle process's memory for its lifetime (docs/BENCHMARKS.md section 16)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to do
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def telegram_channel(runtime: Runtime, *, journal: bool = True) -> TelegramChannel:
    """The Telegram channel as `sertakan run` serves it: parking updates that keep failing,
    the inbound journal for long polling, the durable reply queue, the shared send budget
    (raises ValueError without a token). `journal=False`: the benchmark's baseline."""
    from bot.telegram import TelegramChannel

    settings = runtime.settings
    return TelegramChannel(
        runtime.engine,
        settings.telegram,
        runtime.clock,
        catalogs=runtime.catalogs,
        dead_letters=DeadLetters(runtime.sessionmaker, runtime.cipher),
        database=runtime.db,
        cipher=runtime.cipher,
        reply_settings=settings.reply,
        budget=runtime.send_budget,
        journal=journal,
    )


async def _close_channels(
    runtime: Runtime, telegram: TelegramChannel | None, whatsapp: WhatsAppChannel | None
) -> None:
    if telegram is not None:
        await telegram.close()
    if whatsapp is not None:
        await whatsapp.close()
    await runtime.close()
