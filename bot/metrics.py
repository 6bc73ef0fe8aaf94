"""Prometheus metrics (prometheus-client), served at /metrics by `bot.health`.

One process: the default registry. `sertakan run --workers N`: the supervisor
gives every child the same `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's own
variable, read when the library is imported), every child writes its counters and
histograms to files there, and whichever child answers a scrape sums them all
(`MultiProcessCollector`): a scrape through the shared port sees the whole bot,
not the one process the kernel picked. Values read from the database (outbox
backlog, oldest due row, parked updates) are not process-local: the answering
process reads them at scrape time (`DatabaseCollector`, cached by `HealthProbe`).

Label values are closed sets (channel names, outcome and result words, job ids):
never a person, an update id or an error text.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from domain.vocabulary import Channel
from scheduler.dispatcher import CountsMessages
from scheduler.sending import Deferred, OutgoingNotice, Permanent, RetryAfter, Sender, SendResult

if TYPE_CHECKING:
    from collections.abc import Iterable

    from apscheduler.events import JobExecutionEvent
    from prometheus_client import Metric

    from bot.health import HealthProbe

#: prometheus-client's switch to multiprocess mode; `bot.workers` sets it for its children.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

UPDATES = Counter(
    "sertakan_updates",
    "Inbound updates run through the engine, by channel and outcome (ok, error, parked).",
    ["channel", "outcome"],
)
ENGINE_STEP = Histogram(
    "sertakan_engine_step_seconds",
    "One inbound event's engine step: its transaction, from start to commit.",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SENDS = Counter(
    "sertakan_sends",
    "Messages handed to a platform, by channel, path (reply: a step's answer; notice: the "
    "outbox) and result (sent; rate_limited: Telegram 429 or WhatsApp 130429; deferred: "
    "WhatsApp's per-recipient limit 131056; transient; permanent).",
    ["channel", "path", "result"],
)
JOB_RUN = Histogram(
    "sertakan_scheduled_job_seconds",
    "Scheduled jobs (planners: dues_reminders, pic_digest, catch_up; housekeeping; the "
    "outbox dispatcher tick), from the time the run was due to its end.",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
)


# The labelled children, looked up once per label set (closed sets): `labels()` validates
# and locks on every call, several times the cost of the `inc()` itself.
@functools.cache
def _updates(channel: str, outcome: str) -> Counter:
    return UPDATES.labels(channel, outcome)


@functools.cache
def _step(channel: str) -> Histogram:
    return ENGINE_STEP.labels(channel)


@functools.cache
def _sends(channel: str, path: str, result: str) -> Counter:
    return SENDS.labels(channel, path, result)


def result_label(result: SendResult) -> str:
    """The `result` label of a send result."""
    if isinstance(result, RetryAfter):
        return "rate_limited"
    if isinstance(result, Deferred):
        return "deferred"
    if isinstance(result, Permanent):
        return "permanent"
    return type(result).__name__.lower()  # sent, transient


def count_send(channel: Channel, path: str, result: SendResult) -> None:
    """Count one send's `result` (`path`: "reply" or "notice")."""
    _sends(channel.value, path, result_label(result)).inc()


def count_parked(channel: Channel) -> None:
    """Count one update parked in `failed_update`."""
    _updates(channel.value, "parked").inc()


@contextlib.contextmanager
def engine_step(channel: Channel) -> Iterator[None]:
    """Time one engine step and count it as ok, or as error when it raises."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        _step(channel.value).observe(time.perf_counter() - started)
        _updates(channel.value, outcome).inc()


def observe_job(event: JobExecutionEvent) -> None:
    """APScheduler listener (EVENT_JOB_EXECUTED | EVENT_JOB_ERROR): the job's run time."""
    ended = time.time()
    JOB_RUN.labels(job=event.job_id).observe(max(0.0, ended - event.scheduled_run_time.timestamp()))


class MeteredSender:
    """A `Sender` that counts what `inner` reports (the outbox dispatcher's sends)."""

    def __init__(self, inner: Sender, channel: Channel) -> None:
        self._inner = inner
        self.channel = channel

    def message_count(self, notice: OutgoingNotice) -> int:
        """`inner`'s count of platform messages for `notice` (1 when it keeps none)."""
        if isinstance(self._inner, CountsMessages):
            return self._inner.message_count(notice)
        return 1

    async def send(self, notice: OutgoingNotice) -> SendResult:
        result = await self._inner.send(notice)
        count_send(self.channel, "notice", result)
        return result


def metered(senders: dict[Channel, Sender]) -> dict[Channel, Sender]:
    """`senders`, each wrapped in a `MeteredSender`."""
    return {channel: MeteredSender(sender, channel) for channel, sender in senders.items()}


class DatabaseCollector(Collector):
    """The database-wide gauges, from the probe's last (cached) reading."""

    def __init__(self, probe: HealthProbe) -> None:
        self._probe = probe

    def collect(self) -> Iterable[Metric]:
        reading = self._probe.last
        if reading is None or not reading.database_ok:
            return []
        backlog = GaugeMetricFamily(
            "sertakan_outbox_backlog", "Outbox notices due now and not yet sent."
        )
        backlog.add_metric([], reading.outbox_due)
        oldest = GaugeMetricFamily(
            "sertakan_outbox_oldest_due_age_seconds",
            "Age of the oldest due outbox notice (0 when none is due).",
        )
        oldest.add_metric([], reading.oldest_due_age_s)
        parked = GaugeMetricFamily(
            "sertakan_parked_updates", "Inbound updates parked in failed_update (not yet pruned)."
        )
        parked.add_metric([], reading.parked)
        return [backlog, oldest, parked]


def multiprocess_dir() -> str | None:
    """The shared metrics folder of `sertakan run --workers N`, None in a single process."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(extra: Collector | None = None) -> tuple[bytes, str]:
    """The Prometheus text of every metric (all processes' in multiprocess mode) plus `extra`."""
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    if extra is not None:
        registry.register(extra)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Default(Collector):
    """The default registry's metrics (this process's), inside a per-scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def mark_process_dead(pid: int) -> None:
    """Tell multiprocess mode a child ended (its live gauges stop counting)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
