"""`sertakan run --workers N`: N bot processes serving one port, kept running by a supervisor.

The supervisor prepares the database once (reach it, migrate when
DATABASE_AUTO_MIGRATE, check and record the NIK key: the same start-up as one
process), then starts N children (`python -m bot run --worker`), each a whole
bot: web server, reply delivery, WhatsApp processor, scheduler and outbox
dispatcher. Each child binds WEB_HOST:WEB_PORT with SO_REUSEPORT, so the kernel
spreads connections over them; everything they share lives in PostgreSQL (the
update claim, the person's row lock, the outbox claims), so any child may take
any request. The supervisor binds nothing and touches no update.

- A child that ends while the supervisor is not stopping is started again after
  a pause (1 s, doubling while children keep dying quickly, at most 30 s),
  so one crash costs that child's in-flight requests (Telegram and Meta
  redeliver them) and nothing else.
- SIGTERM or SIGINT to the supervisor is forwarded to every child as SIGTERM;
  each stops as one process does (a dispatcher tick records what it sent, the
  web server closes), and one still running after `STOP_GRACE_S` is killed.
- Telegram's set-up calls are the supervisor's, once per start: the command
  menu and getMe before the children start (the username goes to them as
  TELEGRAM_BOT_USERNAME), setWebhook once a child listens. The children
  (`--worker`) skip them, so a restarted child changes nothing at Telegram.
- Metrics: the children share one fresh `PROMETHEUS_MULTIPROC_DIR`
  (`bot.metrics`), removed when the supervisor ends.

Telegram long polling cannot be shared (one getUpdates consumer per bot) and
SQLite is for one process (its statements run on the event loop): both are
refused with a StartupError saying what to set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time

from bot import metrics
from bot.app import StartupError, build_runtime
from bot.settings import Settings, TelegramMode
from bot.telegram import TelegramChannel
from storage.db import is_sqlite

log = logging.getLogger(__name__)

#: A child still running this long after SIGTERM is killed.
STOP_GRACE_S = 30.0
RESTART_FIRST_S = 1.0
RESTART_CAP_S = 30.0
#: The supervisor registers the Telegram webhook once a child listens, or after this long.
WEBHOOK_WAIT_S = 60.0
#: A child that ran at least this long before dying restarts after the first pause again.
STABLE_S = 60.0


def refusal(settings: Settings, workers: int) -> str | None:
    """Why `workers` processes cannot serve this configuration, or None when they can."""
    if workers <= 1:
        return None
    if is_sqlite(settings.database_url):
        return (
            f"--workers {workers} needs PostgreSQL (DATABASE_URL=postgresql+asyncpg://...): "
            "SQLite serves one bot process"
        )
    telegram = settings.telegram.token is not None
    if telegram and settings.telegram.mode is TelegramMode.POLLING:
        return (
            f"--workers {workers} needs Telegram in webhook mode (TELEGRAM_MODE=webhook with "
            "TELEGRAM_WEBHOOK_URL and TELEGRAM_WEBHOOK_SECRET): long polling has one reader "
            "per bot, so several processes would take each other's updates; run one process "
            "to poll"
        )
    if not telegram and not settings.whatsapp.enabled:
        return f"--workers {workers} serves webhooks: set TELEGRAM_TOKEN or WhatsApp's settings"
    return None


class Supervisor:
    """Starts `workers` children of `command` and keeps them running until `stop()`."""

    def __init__(self, command: list[str], workers: int, env: dict[str, str]) -> None:
        self._command = command
        self._workers = workers
        self._env = env
        self._stopping = asyncio.Event()
        self.children: dict[int, asyncio.subprocess.Process] = {}
        #: Children started again after they died, for the log and the tests.
        self.restarts = 0

    def stop(self) -> None:
        """Ask every child to stop (SIGTERM); `run` returns when they did."""
        self._stopping.set()

    async def run(self) -> None:
        slots = [asyncio.create_task(self._keep(slot)) for slot in range(self._workers)]
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            await asyncio.gather(*slots, return_exceptions=True)

    async def _keep(self, slot: int) -> None:
        """Keep one child running in `slot` until stopping."""
        pause = RESTART_FIRST_S
        while not self._stopping.is_set():
            started = time.monotonic()
            child = await asyncio.create_subprocess_exec(*self._command, env=self._env)
            self.children[slot] = child
            log.info("worker %d started (pid %d)", slot, child.pid)
            stopping = asyncio.create_task(self._stopping.wait())
            ended = asyncio.create_task(child.wait())
            await asyncio.wait([stopping, ended], return_when=asyncio.FIRST_COMPLETED)
            if not ended.done():
                await self._end(child)
                stopping.cancel()
                metrics.mark_process_dead(child.pid)
                return
            stopping.cancel()
            metrics.mark_process_dead(child.pid)
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_S:
                pause = RESTART_FIRST_S
            log.error(
                "worker %d (pid %d) ended with code %s: starting another in %.0f s",
                slot,
                child.pid,
                child.returncode,
                pause,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
            pause = min(pause * 2, RESTART_CAP_S)
            self.restarts += 1

    @staticmethod
    async def _end(child: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.error(
                "worker pid %d still running %.0f s after SIGTERM: killed", child.pid, STOP_GRACE_S
            )
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


async def _port_answers(settings: Settings, within_s: float) -> bool:
    """Whether WEB_HOST:WEB_PORT accepts a connection (a child listens) within `within_s`."""
    host = settings.web.host if settings.web.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, settings.web.port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def _register_webhook(telegram: TelegramChannel, settings: Settings) -> None:
    """setWebhook once a child listens, as one process does after its server started
    (after WEBHOOK_WAIT_S without one, anyway: Telegram retries its deliveries)."""
    await _port_answers(settings, WEBHOOK_WAIT_S)
    try:
        await telegram.set_webhook()
        log.info("Telegram webhook registered")
    except Exception:
        log.exception("setWebhook failed: no Telegram update arrives until a restart registers it")


def child_command() -> list[str]:
    """How the supervisor starts one child: this interpreter, `-m bot run --worker`."""
    return [sys.executable, "-m", "bot", "run", "--worker"]


async def supervise(settings: Settings, workers: int) -> int:
    """Run `workers` bot processes on one port until SIGINT/SIGTERM; 0 after a clean stop.

    Raises StartupError when the configuration cannot be served by several processes.
    """
    reason = refusal(settings, workers)
    if reason is not None:
        raise StartupError(reason)
    # Migrations and the key's first recording happen here, once, not N times at once.
    runtime = await build_runtime(settings)
    telegram: TelegramChannel | None = None
    env = dict(os.environ)
    try:
        if settings.telegram.token is not None:
            # Telegram's set-up calls, once for all the children (they skip them:
            # `_run_channels(announce=False)`), not N times at every start and restart.
            telegram = TelegramChannel(
                runtime.engine, settings.telegram, runtime.clock, catalogs=runtime.catalogs
            )
            await telegram.set_commands()
            # The children need the username for consent links: getMe once, here.
            username = settings.telegram.bot_username or await telegram.username()
            if username:
                env["TELEGRAM_BOT_USERNAME"] = username
    except BaseException:
        if telegram is not None:
            await telegram.close()
        raise
    finally:
        # The channel keeps only its Bot API session (for setWebhook below).
        await runtime.close()
    metrics_dir = tempfile.mkdtemp(prefix="sertakan-metrics-")
    # The children read their settings from this same environment (the one place
    # that passes it on rather than reading it).
    env.update({metrics.MULTIPROC_ENV: metrics_dir, "DATABASE_AUTO_MIGRATE": "false"})
    supervisor = Supervisor(child_command(), workers, env)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, supervisor.stop)
    log.info("serving %s:%s from %d processes", settings.web.host, settings.web.port, workers)
    registering = None
    if telegram is not None and settings.telegram.mode is TelegramMode.WEBHOOK:
        registering = asyncio.create_task(_register_webhook(telegram, settings))
    try:
        await supervisor.run()
    finally:
        if registering is not None:
            registering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await registering
        if telegram is not None:
            await telegram.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("all %d workers stopped", workers)
    return 0
