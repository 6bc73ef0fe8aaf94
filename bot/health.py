"""/healthz, /readyz and /metrics on the bot's web server, and request ids for its log lines.

- `/healthz`: the process is alive (its event loop answers). No database.
- `/readyz`: 200 when the database answers, its schema is at this release's
  migration head and the outbox is not stuck; 503 with the failing checks
  otherwise. "Stuck": a notice due for longer than `WEB_READY_OUTBOX_STUCK_MINUTES`,
  counted from the end of the quiet hours it fell into (a reminder planned at
  06:00 and waiting for 07:00 is not late).
- `/metrics`: Prometheus text (`bot.metrics`), when `WEB_METRICS_ENABLED`.

Both database-backed answers come from one `HealthProbe` reading (one short
read-only transaction, three indexed aggregates), cached for
`WEB_READY_CACHE_S`: a load balancer polling every process every second costs
the database at most one query per process per cache period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import log_context, metrics
from domain.quiet_hours import QuietHours
from domain.vocabulary import OutboxStatus
from storage.migrate import head_revision
from storage.models import FailedUpdate, Outbox

if TYPE_CHECKING:
    from bot.app import Runtime

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
REQUEST_ID_HEADER = log_context.REQUEST_ID_HEADER


@dataclasses.dataclass(slots=True, frozen=True)
class Reading:
    """One look at the database; `problems` empty means ready."""

    database_ok: bool
    revision: str | None
    outbox_due: int
    oldest_due_age_s: float
    parked: int
    problems: tuple[str, ...]


class HealthProbe:
    """Reads the database's readiness at most once per `cache_s` (concurrent callers share it)."""

    def __init__(
        self,
        db: AsyncEngine,
        *,
        clock: Callable[[], datetime],
        timezone: ZoneInfo,
        quiet_hours: QuietHours,
        outbox_stuck_s: float,
        cache_s: float,
        head: str | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._timezone = timezone
        self._quiet = quiet_hours
        self._stuck_s = outbox_stuck_s
        self._cache_s = cache_s
        self._head = head if head is not None else head_revision()
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        #: The newest reading (None before the first).
        self.last: Reading | None = None

    async def reading(self) -> Reading:
        """The cached reading, or a new one when it is older than `cache_s`."""
        async with self._lock:
            if self.last is None or time.monotonic() - self._read_at >= self._cache_s:
                self.last = await self._read()
                self._read_at = time.monotonic()
            return self.last

    async def _read(self) -> Reading:
        now = self._clock()
        due = (Outbox.status == OutboxStatus.PENDING) & (Outbox.not_before <= now)
        try:
            async with self._db.connect() as connection:
                revision = await connection.scalar(
                    text("SELECT max(version_num) FROM alembic_version")
                )
                oldest, backlog = (
                    await connection.execute(
                        select(func.min(Outbox.not_before), func.count()).where(due)
                    )
                ).one()
                parked = await connection.scalar(select(func.count()).select_from(FailedUpdate))
        except Exception as exc:  # any failure to read is "not ready"; the type says why
            log.warning("readiness: the database did not answer: %s", type(exc).__name__)
            return Reading(False, None, 0, 0.0, 0, (f"database: {type(exc).__name__}",))
        problems: list[str] = []
        if revision != self._head:
            problems.append(f"migrations: database at {revision}, this release needs {self._head}")
        age = 0.0 if oldest is None else (now - oldest).total_seconds()
        if oldest is not None:
            # Counted from when it could first be sent: the end of the quiet hours it fell into.
            late_s = (now - self._quiet.next_allowed(oldest, self._timezone)).total_seconds()
            if late_s > self._stuck_s:
                problems.append(f"outbox: a notice has been due for {int(late_s)} s")
        return Reading(
            True, revision, int(backlog), max(0.0, age), int(parked or 0), tuple(problems)
        )


def probe_for(runtime: Runtime) -> HealthProbe:
    """The probe for `runtime`'s database, configured by WEB_* and DISPATCH_* settings."""
    settings = runtime.settings
    return HealthProbe(
        runtime.db,
        clock=runtime.clock,
        timezone=runtime.timezone,
        quiet_hours=QuietHours(settings.dispatch.quiet_start, settings.dispatch.quiet_end),
        outbox_stuck_s=settings.web.ready_outbox_stuck_minutes * 60.0,
        cache_s=settings.web.ready_cache_s,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (the proxy's X-Request-Id, else a new one) for its log lines."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given[:64] if given.isprintable() and given else uuid.uuid4().hex
    with log_context.bound(request_id=request_id):
        response = await handler(request)
    response.headers.setdefault(REQUEST_ID_HEADER, request_id)
    return response


def add_health_routes(app: web.Application, runtime: Runtime) -> HealthProbe:
    """/healthz, /readyz and (WEB_METRICS_ENABLED) /metrics on `app`, and request ids.

    Call before the app starts (it adds a middleware). Returns the probe.
    """
    probe = probe_for(runtime)
    collector = metrics.DatabaseCollector(probe)
    app.middlewares.append(request_ids)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        reading = await probe.reading()
        body = {
            "status": "ready" if not reading.problems else "not ready",
            "problems": list(reading.problems),
            "revision": reading.revision,
            "outbox_due": reading.outbox_due,
        }
        return web.json_response(body, status=200 if not reading.problems else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        await probe.reading()
        # Summing the processes' files is blocking I/O: off the event loop.
        payload, content_type = await asyncio.to_thread(metrics.exposition, collector)
        response = web.Response(body=payload)
        response.headers["Content-Type"] = content_type
        return response

    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get(READY_PATH, readyz)
    if runtime.settings.web.metrics_enabled:
        app.router.add_get(METRICS_PATH, metrics_page)
    return probe
