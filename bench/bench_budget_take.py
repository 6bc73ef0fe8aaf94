"""Benchmark: the CPU of one PostgreSQL send-budget statement (a take or a defer).

A reply of two messages costs three budget statements (two takes, one defer:
bot/delivery.py). This measures, for the code on `sys.path`, what one costs:
this process's CPU time (SQLAlchemy, asyncpg, the pool's checkout), the
PostgreSQL backends' CPU time (from /proc, every backend of the database but
the bench's own monitor) and the wall time, over `--statements` statements
one after another (two takes, then a defer, repeated), after a warm-up.

    python -m bench.bench_budget_take --database-url postgresql+asyncpg://... [--statements 3000]

Compare two versions by running each from its own checkout (`PYTHONPATH=<checkout>`),
alternating, in the same minutes. The database needs the budget's tables
(`sertakan migrate`, or bench_cluster's run before it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from domain.vocabulary import Channel
from storage import send_budget as budget_module
from storage.db import create_engine
from storage.send_budget import ChannelRate, PostgresSendBudget

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Fast enough that no take waits: the statement's cost alone.
RATES = {Channel.TELEGRAM: ChannelRate(per_second=1e6, recipient_interval_s=1.0)}


def cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def run(url: str, statements: int) -> None:
    import asyncpg  # type: ignore[import-untyped]

    engine = create_engine(url)
    budget = PostgresSendBudget(engine, RATES)
    monitor = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:

        async def one_round(i: int) -> None:
            await budget.take(Channel.TELEGRAM)
            await budget.take(Channel.TELEGRAM)
            await budget.defer(Channel.TELEGRAM, str(i), 1.0)

        for i in range(50):
            await one_round(i)
        rows = await monitor.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        backends = [int(row["pid"]) for row in rows]
        rounds = statements // 3
        server = sum(cpu_s(pid) for pid in backends)
        client = time.process_time()
        wall = time.perf_counter()
        for i in range(rounds):
            await one_round(i)
        wall = time.perf_counter() - wall
        client = time.process_time() - client
        server = sum(cpu_s(pid) for pid in backends) - server
        done = rounds * 3
        print(
            f"{Path(budget_module.__file__).parents[1]}: {done} statements, per statement: "
            f"client CPU {client / done * 1000:.3f} ms, PostgreSQL backends' CPU "
            f"{server / done * 1000:.3f} ms, wall {wall / done * 1000:.3f} ms; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    finally:
        close = getattr(budget, "close", None)  # older budgets have none
        if close is not None:
            await close()
        await engine.dispose()
        await monitor.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--statements", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(run(args.database_url, args.statements))
    return 0


if __name__ == "__main__":
    sys.exit(main())
