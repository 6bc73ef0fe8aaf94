"""Issue 14 items 4-5: /healthz, /readyz and /metrics over real HTTP on the test database.

The runtime is the one `sertakan run` builds (tests.fakes.runtime), the routes are
added by `add_health_routes` as `_run_channels` adds them, and an aiohttp test
server serves them on 127.0.0.1. The database is the session's (PostgreSQL with
TEST_DATABASE_URL); "down" is a PostgreSQL URL on a port nobody listens on, and
"behind" a SQLite file migrated to the revision before head.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import metrics
from bot.app import Runtime
from bot.health import REQUEST_ID_HEADER, add_health_routes
from bot.settings import WebSettings
from domain.vocabulary import Channel
from scheduler.sending import OutgoingNotice, RetryAfter, SendResult, Sent
from storage.db import create_engine
from storage.migrate import alembic_config
from storage.outbox import Notice, enqueue
from tests.fakes.clock import FrozenClock
from tests.fakes.runtime import open_runtime

Client = TestClient[web.Request, web.Application]
#: 10:00 in Jakarta: outside the default quiet hours (21:00-07:00).
MORNING = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


@pytest.fixture
async def runtime(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine
) -> AsyncIterator[Runtime]:
    async with open_runtime(tmp_path, database_url, clock=FrozenClock(MORNING)) as built:
        # No cache: each request reads the database, so a test sees its own changes.
        web_settings = WebSettings(ready_cache_s=0, ready_outbox_stuck_minutes=30)
        yield dataclasses.replace(
            built, settings=built.settings.model_copy(update={"web": web_settings})
        )


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[Client]:
    async with serve(runtime) as http:
        yield http


def serve(runtime: Runtime) -> Client:
    app = web.Application()
    add_health_routes(app, runtime)
    return TestClient(TestServer(app, host="127.0.0.1"))


async def queue_notice(runtime: Runtime, key: str, due: datetime) -> None:
    async with runtime.db.begin() as connection:
        notice = Notice(key, Channel.TELEGRAM, "4242", "dues_reminder", "Iuran jatuh tempo")
        assert await enqueue(connection, notice, now=due, not_before=due)


async def test_healthz_answers_without_the_database(runtime: Runtime) -> None:
    down = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        async with serve(dataclasses.replace(runtime, db=down)) as http:
            response = await http.get("/healthz")
            assert response.status == 200
            assert await response.json() == {"status": "alive"}
    finally:
        await down.dispose()


async def test_readyz_is_ready_on_a_migrated_database_with_nothing_due(client: Client) -> None:
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready" and body["problems"] == []
    assert body["revision"] is not None and body["outbox_due"] == 0


async def test_readyz_fails_when_the_database_is_down(runtime: Runtime) -> None:
    down = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        async with serve(dataclasses.replace(runtime, db=down)) as http:
            response = await http.get("/readyz")
            body = await response.json()
    finally:
        await down.dispose()
    assert response.status == 503
    assert len(body["problems"]) == 1 and body["problems"][0].startswith("database: ")


async def test_readyz_fails_when_migrations_are_behind(runtime: Runtime, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'behind.db'}"
    config = alembic_config(url)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    assert head is not None
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)
    await asyncio.to_thread(command.upgrade, config, previous)
    behind = create_engine(url)
    try:
        async with serve(dataclasses.replace(runtime, db=behind)) as http:
            response = await http.get("/readyz")
            body = await response.json()
    finally:
        await behind.dispose()
    assert response.status == 503
    assert body["revision"] == previous
    assert body["problems"] == [f"migrations: database at {previous}, this release needs {head}"]


async def test_readyz_fails_when_a_notice_is_due_too_long(client: Client, runtime: Runtime) -> None:
    await queue_notice(runtime, "recent", MORNING - timedelta(minutes=10))
    fresh = await client.get("/readyz")
    assert fresh.status == 200, await fresh.json()
    await queue_notice(runtime, "old", MORNING - timedelta(minutes=45))
    stuck = await client.get("/readyz")
    body = await stuck.json()
    assert stuck.status == 503
    assert body["problems"] == ["outbox: a notice has been due for 2700 s"]
    assert body["outbox_due"] == 2


async def test_a_notice_waiting_for_quiet_hours_to_end_is_not_stuck(
    client: Client, runtime: Runtime
) -> None:
    # Due 06:00 Jakarta (quiet until 07:00); now 07:20: late by 20 min only.
    clock = runtime.clock
    assert isinstance(clock, FrozenClock)
    clock.now = datetime(2026, 11, 21, 0, 20, tzinfo=UTC)
    await queue_notice(runtime, "dawn", datetime(2026, 11, 20, 23, 0, tzinfo=UTC))
    waiting = await client.get("/readyz")
    assert waiting.status == 200, await waiting.json()
    clock.now = datetime(2026, 11, 21, 0, 31, tzinfo=UTC)  # 07:31: 31 min past quiet hours
    late = await client.get("/readyz")
    assert late.status == 503
    assert (await late.json())["problems"] == ["outbox: a notice has been due for 1860 s"]


class _Answers:
    """A sender answering from a list (the platform's side is tested in the adapters' tests)."""

    channel = Channel.TELEGRAM

    def __init__(self, *results: SendResult) -> None:
        self._results = list(results)

    async def send(self, notice: OutgoingNotice) -> SendResult:
        return self._results.pop(0)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match[1] != name:
            continue
        found = ",".join(sorted((match[2] or "").split(","))) if match[2] else ""
        if found == wanted:
            return float(match[3])
    return 0.0


async def test_metrics_show_sends_steps_and_the_outbox(client: Client, runtime: Runtime) -> None:
    before = await (await client.get("/metrics")).text()
    sender = metrics.metered({Channel.TELEGRAM: _Answers(RetryAfter(3.0), Sent())})
    notice = OutgoingNotice(1, Channel.TELEGRAM, "4242", "dues_reminder", "x", None, {})
    assert isinstance(await sender[Channel.TELEGRAM].send(notice), RetryAfter)
    assert isinstance(await sender[Channel.TELEGRAM].send(notice), Sent)
    with metrics.engine_step(Channel.WHATSAPP):
        pass
    with pytest.raises(RuntimeError), metrics.engine_step(Channel.WHATSAPP):
        raise RuntimeError("the step failed")
    await queue_notice(runtime, "due", MORNING - timedelta(minutes=5))

    response = await client.get("/metrics")
    after = await response.text()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    sends = "sertakan_sends_total"
    assert grew(sends, channel="telegram", path="notice", result="rate_limited") == 1
    assert grew(sends, channel="telegram", path="notice", result="sent") == 1
    assert grew("sertakan_updates_total", channel="whatsapp", outcome="ok") == 1
    assert grew("sertakan_updates_total", channel="whatsapp", outcome="error") == 1
    assert grew("sertakan_engine_step_seconds_count", channel="whatsapp") == 2
    assert sample(after, "sertakan_outbox_backlog") == 1
    assert sample(after, "sertakan_outbox_oldest_due_age_seconds") == 300
    assert sample(after, "sertakan_parked_updates") == 0


async def test_metrics_can_be_switched_off(runtime: Runtime) -> None:
    settings = runtime.settings.model_copy(update={"web": WebSettings(metrics_enabled=False)})
    async with serve(dataclasses.replace(runtime, settings=settings)) as http:
        assert (await http.get("/metrics")).status == 404
        assert (await http.get("/healthz")).status == 200


async def test_a_request_carries_the_proxys_request_id_or_a_new_one(client: Client) -> None:
    given = await client.get("/healthz", headers={REQUEST_ID_HEADER: "nginx-abc123"})
    assert given.headers[REQUEST_ID_HEADER] == "nginx-abc123"
    made = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers[REQUEST_ID_HEADER])
