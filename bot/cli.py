"""`sertakan` command line: run the bot, the console, migrations, OPD data, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot import cli_admin, cli_files, cli_outbox, cli_plan
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
from bot.settings import Settings, TelegramMode
from domain.local_time import format_local
from domain.vocabulary import Channel
from scheduler.runner import stop_scheduler
from storage.crypto import generate_key
from storage.dead_letters import DeadLetters
from storage.opd_repository import OpdFileError, OpdRepository

if TYPE_CHECKING:
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


_EXTENSIONS: tuple[_Extension, ...] = (cli_admin, cli_files, cli_outbox, cli_plan)
_BUILT_IN = frozenset({"run", "console", "migrate", "opd", "failed", "key"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sertakan",
        description="SERTAKAN bot: ASN enroll and sponsor vulnerable workers into BPJS "
        "Ketenagakerjaan. Without a subcommand, `run` is assumed.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser(
        "run",
        help="run the bot: Telegram when TELEGRAM_TOKEN is set, otherwise the console",
    )
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
    for extension in _EXTENSIONS:
        extension.add_parsers(sub)
    return parser


async def run_extension(args: argparse.Namespace, runtime: Runtime) -> int:
    """Run a subcommand of one of the `_EXTENSIONS` modules on `runtime`."""
    for extension in _EXTENSIONS:
        result = await extension.dispatch(args, runtime)
        if result is not None:
            return result
    raise AssertionError(f"no handler for command {args.command!r}")


#: Files this process creates (SQLite database, WAL, exports, key file) are owner-only.
PRIVATE_UMASK = 0o077


def main(argv: Sequence[str] | None = None) -> int:
    # First, before anything writes a file: they hold NIKs, names and phone numbers.
    os.umask(PRIVATE_UMASK)
    args = build_parser().parse_args(argv)
    if args.command == "key":
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


def _is_console(args: argparse.Namespace, settings: Settings) -> bool:
    """`sertakan console`, or `run` (the default) without Telegram or WhatsApp credentials."""
    command = args.command or "run"
    no_messenger = settings.telegram.token is None and not settings.whatsapp.enabled
    return command == "console" or (command == "run" and no_messenger)


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
    if _is_console(args, settings):
        return await _run_console(settings, user=getattr(args, "user", "asn"))
    return await _run_channels(settings)


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
        try:
            await console.run()
        finally:
            await dispatcher.stop()
            await stop_scheduler(scheduler)
    finally:
        await runtime.close()
    return 0


async def _run_channels(settings: Settings) -> int:
    """Telegram (polling or webhook) and/or WhatsApp (webhook), with the outbox dispatcher.

    One web server serves every webhook (`WEB_HOST`:`WEB_PORT`): Telegram's in
    webhook mode, WhatsApp's always. The process runs until SIGINT/SIGTERM or
    until a channel's loop fails.
    """
    # Imported here: the console never loads aiogram, pywa or aiohttp's server.
    from aiohttp import web

    from bot.access_log import app_runner
    from bot.telegram import TelegramChannel, TelegramSender
    from bot.whatsapp.channel import build_whatsapp

    runtime = await build_runtime(settings)
    senders: dict[Channel, Sender] = {}
    telegram: TelegramChannel | None = None
    whatsapp: WhatsAppChannel | None = None
    try:
        if settings.telegram.token is not None:
            telegram = TelegramChannel(
                runtime.engine,
                settings.telegram,
                runtime.clock,
                catalogs=runtime.catalogs,
                dead_letters=DeadLetters(runtime.sessionmaker, runtime.cipher),
                database=runtime.db,
                cipher=runtime.cipher,
                reply_settings=settings.reply,
                budget=runtime.send_budget,
            )
            senders[Channel.TELEGRAM] = TelegramSender(telegram.bot)
        if settings.whatsapp.enabled:
            whatsapp = build_whatsapp(runtime)
            senders[Channel.WHATSAPP] = whatsapp.sender
    except BaseException:
        await _close_channels(runtime, telegram, whatsapp)
        raise
    scheduler, dispatcher = build_background(runtime, senders)
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
    try:
        if telegram is not None:
            await telegram.set_commands()
            if not runtime.engine.config.telegram_bot_username:
                # Consent links t.me/<username>?start=... need it (TELEGRAM_BOT_USERNAME unset).
                runtime.engine.use_telegram_username(await telegram.username())
        scheduler.start()
        if telegram_webhook or whatsapp is not None:
            app = web.Application()
            if telegram is not None and telegram_webhook:
                telegram.webhook_routes(app)
            if whatsapp is not None:
                whatsapp.routes(app)
            runner = app_runner(app)
            await runner.setup()
            await web.TCPSite(runner, settings.web.host, settings.web.port).start()
            log.info("webhook server on %s:%s", settings.web.host, settings.web.port)
        if telegram is not None and telegram_webhook:
            await telegram.set_webhook()
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


async def _close_channels(
    runtime: Runtime, telegram: TelegramChannel | None, whatsapp: WhatsAppChannel | None
) -> None:
    if telegram is not None:
        await telegram.close()
    if whatsapp is not None:
        await whatsapp.close()
    await runtime.close()
