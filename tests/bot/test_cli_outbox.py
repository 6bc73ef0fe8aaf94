"""`sertakan outbox ...`, parsed as the CLI parses it and run on the test database."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Runtime
from bot.cli import build_parser
from bot.cli_outbox import dispatch
from domain.vocabulary import Channel, OutboxStatus
from storage.outbox import (
    Notice,
    claim_due,
    counts_by_status,
    enqueue,
    mark_failed,
    mark_sent,
)
from tests.fakes.clock import FrozenClock
from tests.fakes.runtime import open_runtime

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture
async def runtime(
    tmp_path: Path,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
) -> AsyncIterator[Runtime]:
    async with open_runtime(tmp_path, database_url, clock=FrozenClock(NOW)) as runtime:
        yield runtime


async def run(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int | None, str, str]:
    status = await dispatch(parser().parse_args(argv), runtime)
    out, err = capsys.readouterr()
    return status, out, err


async def seed(runtime: Runtime) -> dict[str, int]:
    """Three notices: one sent, one failed (blocked), one pending; returns ids by kind."""
    async with runtime.db.begin() as connection:
        for kind, chat in (("digest", "1001"), ("card_ready", "1002"), ("returned", "1003")):
            await enqueue(
                connection,
                Notice(
                    dedupe_key=f"{kind}:{chat}",
                    channel=Channel.TELEGRAM,
                    recipient=chat,
                    kind=kind,
                    body="Kartu KPJ 3201********0001 siap",
                ),
                now=NOW - timedelta(hours=1),
            )
        claimed = {
            claim.kind: claim
            for claim in await claim_due(connection, now=NOW, limit=2, lease=timedelta(minutes=5))
        }
        await mark_sent(connection, claimed["digest"], now=NOW)
        await mark_failed(
            connection,
            claimed["card_ready"],
            error="TelegramForbiddenError: Forbidden: bot was blocked by the user",
        )
    return {kind: claim.id for kind, claim in claimed.items()}


async def test_status_counts_every_status(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(runtime)
    status, out, _ = await run(runtime, capsys, "outbox", "status")
    assert status == 0
    assert out.splitlines() == ["pending\t1", "sending\t0", "sent\t1", "failed\t1"]


async def test_failed_lists_the_reason_but_never_the_body(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await seed(runtime)
    status, out, _ = await run(runtime, capsys, "outbox", "failed")
    assert status == 0
    header, row = out.splitlines()
    assert header.split("\t") == [
        "id",
        "channel",
        "recipient",
        "kind",
        "attempts",
        "last error",
        "created",
    ]
    assert row.split("\t") == [
        str(ids["card_ready"]),
        "telegram",
        "1002",
        "card_ready",
        "1",
        "TelegramForbiddenError: Forbidden: bot was blocked by the user",
        "2026-11-21 09:00:00 WIB",
    ]
    assert "KPJ" not in out


async def test_failed_says_so_when_there_are_none(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(runtime, capsys, "outbox", "failed") == (0, "no failed notices\n", "")


async def test_retry_puts_a_failed_notice_back_to_pending(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await seed(runtime)
    status, out, _ = await run(runtime, capsys, "outbox", "retry", str(ids["card_ready"]))
    assert (status, out) == (0, f"notice {ids['card_ready']} is pending again\n")
    async with runtime.db.connect() as connection:
        counts = await counts_by_status(connection)
    assert (counts[OutboxStatus.PENDING], counts[OutboxStatus.FAILED]) == (2, 0)
    async with runtime.db.begin() as connection:
        due = await claim_due(connection, now=NOW, limit=10, lease=timedelta(minutes=5))
    assert ids["card_ready"] in {claim.id for claim in due}


async def test_retry_refuses_an_id_that_is_not_failed(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await seed(runtime)
    status, out, err = await run(runtime, capsys, "outbox", "retry", str(ids["digest"]))
    assert (status, out) == (1, "")
    assert f"no failed notice with id {ids['digest']}" in err


async def test_other_commands_are_not_ours(runtime: Runtime) -> None:
    assert await dispatch(argparse.Namespace(command="opd"), runtime) is None


def test_a_subcommand_is_required() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["outbox"])
