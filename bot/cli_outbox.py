"""`sertakan outbox ...`: what the dispatcher could not deliver, and putting it back.

    sertakan outbox status      how many notices are pending, sending, sent, failed
    sertakan outbox failed      the failed ones (newest first) with their last error
    sertakan outbox retry ID    put a failed notice back to pending, due now

Wired into bot/cli.py by `add_parsers(sub)` and `dispatch(args, runtime)`.
Only ids, channels, recipients' chat ids, kinds and error texts are printed,
never a notice's body.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.local_time import format_local
from storage.outbox import counts_by_status, list_failed, requeue_failed


class OutboxRuntime(Protocol):
    """The part of bot.app.Runtime these commands use."""

    @property
    def db(self) -> AsyncEngine: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...

    @property
    def timezone(self) -> tzinfo: ...


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `outbox` command and its subcommands to the CLI's subparsers."""
    outbox = sub.add_parser("outbox", help="proactive notices: status, failed ones, retry")
    commands = outbox.add_subparsers(dest="outbox_command", required=True)
    commands.add_parser("status", help="count notices by status")
    failed = commands.add_parser("failed", help="list failed notices with their last error")
    failed.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    retry = commands.add_parser("retry", help="put a failed notice back to pending")
    retry.add_argument("id", type=int, help="the notice's id (from `outbox failed`)")


async def dispatch(args: argparse.Namespace, runtime: OutboxRuntime) -> int | None:
    """Run an `outbox` command; None when `args` is not one (the caller goes on)."""
    if getattr(args, "command", None) != "outbox":
        return None
    command = args.outbox_command
    if command == "status":
        return await _status(runtime)
    if command == "failed":
        return await _failed(runtime, args.limit)
    if command == "retry":
        return await _retry(runtime, args.id)
    raise ValueError(f"unknown outbox command {command!r}")


async def _status(runtime: OutboxRuntime) -> int:
    async with runtime.db.connect() as connection:
        counts = await counts_by_status(connection)
    for status, count in counts.items():
        print(f"{status.value}\t{count}")
    return 0


async def _failed(runtime: OutboxRuntime, limit: int) -> int:
    async with runtime.db.connect() as connection:
        failed = await list_failed(connection, limit=limit)
    if not failed:
        print("no failed notices")
        return 0
    print("id\tchannel\trecipient\tkind\tattempts\tlast error\tcreated")
    for row in failed:
        error = " ".join((row.last_error or "-").split())
        print(
            f"{row.id}\t{row.channel.value}\t{row.recipient}\t{row.kind}\t{row.attempts}\t"
            f"{error}\t{format_local(row.created_at, runtime.timezone, seconds=True)}"
        )
    return 0


async def _retry(runtime: OutboxRuntime, outbox_id: int) -> int:
    async with runtime.db.begin() as connection:
        done = await requeue_failed(connection, outbox_id, now=runtime.clock())
    if not done:
        print(f"sertakan: no failed notice with id {outbox_id}", file=sys.stderr)
        return 1
    print(f"notice {outbox_id} is pending again")
    return 0
